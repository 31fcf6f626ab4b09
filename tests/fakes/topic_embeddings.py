"""A fake embedding model on loopback (``POST /v1/embeddings``, OpenAI's shape) whose vectors
mean something: words of one topic (``TOPICS``) point the same way, any other word a way of
its own (a hashed dimension). So "feline" is near "my kitten sleeps", which shares no word with
it, and a test can tell whether vector recall finds what words alone cannot.
"""
from __future__ import annotations

import hashlib
import re

from aiohttp import web

TOPICS = [{"cat", "cats", "kitten", "feline", "purr"},
          {"car", "sedan", "vehicle", "tyres", "engine"},
          {"deploy", "release", "ship", "rollout"}]
DIMENSIONS = 64
REQUESTS = web.AppKey("requests", list)


def vector(text: str) -> list[float]:
    out = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z]+", text.lower()):
        topic = next((i for i, words in enumerate(TOPICS) if word in words), None)
        if topic is None:      # a word of no topic: a dimension of its own, beyond the topics'
            topic = len(TOPICS) + int(hashlib.sha256(word.encode()).hexdigest(), 16) % (
                DIMENSIONS - len(TOPICS))
        out[topic] += 1.0
    return out


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    request.app[REQUESTS].append(inputs)
    return web.json_response({"object": "list", "model": body.get("model"), "data": [
        {"object": "embedding", "index": i, "embedding": vector(text)}
        for i, text in enumerate(inputs)], "usage": {"prompt_tokens": 1, "total_tokens": 1}})


def create_app() -> web.Application:
    app = web.Application()
    app[REQUESTS] = []
    app.router.add_post("/v1/embeddings", embeddings)
    return app
