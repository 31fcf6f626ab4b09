"""What a model costs per token: litellm's bundled price map, read as a file, and the
deployment's own ``model_info`` prices on top (LiteLLM's config vocabulary).

    prices = PriceBook.bundled()               # reads the JSON once, never imports litellm
    prices.cost(entry, "gpt-4o-mini", prompt, completion, cached, cache_write)
                                               # USD, or None where the price is unknown

The map ships inside the litellm package (``model_prices_and_context_window_backup.json``);
it is located with ``importlib.util.find_spec``, which finds a package without running it, so
a passthrough-only daemon never pays litellm's import.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from memproxyd.config import ModelEntry

log = logging.getLogger(__name__)

PRICE_FILE = "model_prices_and_context_window_backup.json"
UNSET = -1.0     # a ``model_info`` price left out: the map's price applies
# our name for a rate → the key of litellm's map and of ``model_info``
RATE_KEYS = {"input": "input_cost_per_token", "output": "output_cost_per_token",
             "cache_read": "cache_read_input_token_cost",
             "cache_write": "cache_creation_input_token_cost"}


def bundled_price_file() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / PRICE_FILE
    return path if path.is_file() else None


class PriceBook:
    def __init__(self, table: dict[str, dict]):
        self.table = table

    @classmethod
    def bundled(cls) -> "PriceBook":
        path = bundled_price_file()
        if path is None:
            log.warning("litellm price map not found: costs of models without model_info "
                        "prices are unknown")
            return cls({})
        try:
            return cls(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("litellm price map unreadable path=%s error=%s", path, exc)
            return cls({})

    def rates(self, entry: ModelEntry | None, model: str) -> dict[str, float] | None:
        """Per-token prices for a call: ``input``, ``output``, ``cache_read``, ``cache_write``;
        None when neither the deployment nor the map knows the model. A cache price the map
        does not have is the input price (OpenAI bills no cache writes)."""
        found = self._lookup(entry, model) or {}
        rates = {rate: found.get(key) for rate, key in RATE_KEYS.items()}
        info = entry.model_info if entry is not None else None
        if info is not None:
            for rate, key in RATE_KEYS.items():
                if getattr(info, key) != UNSET:
                    rates[rate] = getattr(info, key)
        if rates["input"] is None and rates["output"] is None:
            return None
        for rate in ("cache_read", "cache_write"):
            if rates[rate] is None:
                rates[rate] = rates["input"]
        return {k: float(v or 0.0) for k, v in rates.items()}

    def cost(self, entry: ModelEntry | None, model: str, prompt: int, completion: int,
             cached: int, cache_write: int = 0) -> float | None:
        """USD for the tokens of one call: prompt tokens read from the cache at the cache-read
        price, those written to it at the cache-write price, the rest at the input price."""
        rates = self.rates(entry, model)
        if rates is None:
            return None
        cached = min(cached, prompt)
        cache_write = min(cache_write, prompt - cached)
        return ((prompt - cached - cache_write) * rates["input"]
                + cached * rates["cache_read"] + cache_write * rates["cache_write"]
                + completion * rates["output"])

    def _lookup(self, entry: ModelEntry | None, model: str) -> dict | None:
        """The map's row: ``base_model`` if set, else the litellm model as configured, else
        without its provider prefix (``openai/gpt-4o-mini`` → ``gpt-4o-mini``)."""
        names = []
        if entry is not None and entry.model_info.base_model:
            names.append(entry.model_info.base_model)
        names.append(model)
        if "/" in model:
            names.append(model.split("/", 1)[1])
        for name in names:
            row = self.table.get(name)
            if isinstance(row, dict):
                return row
        return None
