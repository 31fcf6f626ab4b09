"""traceparent on the memory backend's calls: recall on Supermemory (the fake) carries the
trace id of the request it was made for."""
from __future__ import annotations

import openai

from tests.conftest import write_config

TRACE_ID = "5cf2a7f13d9e4b06a1c8e0f4d2b79a31"


def test_recall_on_the_memory_backend_carries_the_requests_trace(
        tmp_path, openai_fake, supermemory, start_daemon):
    server, state = supermemory
    extra = f'[supermemory]\napi_key = "sm-test-key"\nbase_url = "{server.url}"\n'
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=extra,
                                       memory='backend = "supermemory"\n'
                                              'recall_timeout_ms = 2000'))
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"x-memory-user-id": "sm-traced",
                                            "traceparent": f"00-{TRACE_ID}-1111111111111111-01"})
    client.chat.completions.create(model="gpt-ok",
                                   messages=[{"role": "user", "content": "what do you know?"}])
    searches = [r for r in server.call(lambda: list(state.requests))
                if r.path.endswith("/search")]
    assert searches, "recall did not reach the memory backend"
    assert all(r.headers.get("traceparent", "").split("-")[1] == TRACE_ID for r in searches)
