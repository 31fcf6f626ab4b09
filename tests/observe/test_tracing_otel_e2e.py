"""[tracing] otlp_endpoint: spans exported through OpenTelemetry to a fake OTLP collector."""
from __future__ import annotations

import openai
import pytest
from aiohttp import web

from tests.conftest import upstream_records, write_config
from tests.fakes.threaded import ThreadedServer

BODIES = web.AppKey("bodies", list)
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


def collector_app() -> web.Application:
    async def traces(request: web.Request) -> web.Response:
        request.app[BODIES].append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app[BODIES] = []
    app.router.add_post("/v1/traces", traces)
    return app


@pytest.fixture
def collector():
    server = ThreadedServer(collector_app()).start()
    yield server
    server.stop()


def test_each_request_is_a_span_of_the_clients_trace(tmp_path, openai_fake, collector,
                                                       start_daemon):
    pytest.importorskip("opentelemetry.sdk")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    extra = f'[tracing]\notlp_endpoint = "{collector.url}/v1/traces"\n'
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=extra))
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
    client.chat.completions.create(model="gpt-ok",
                                   messages=[{"role": "user", "content": "exported"}])
    fresh = client.with_options(default_headers={"traceparent": "none"}).models.with_raw_response
    new_trace = fresh.list().headers["x-memproxy-trace-id"]
    assert daemon.stop() == 0                   # shutdown flushes the last batch
    exported = b"".join(collector.call(lambda: list(collector.app[BODIES])))
    assert bytes.fromhex(TRACE_ID) in exported and bytes.fromhex(CLIENT_SPAN) in exported
    assert b"/v1/chat/completions" in exported
    assert bytes.fromhex(new_trace) in exported     # a trace memproxyd started is exported too
    # the span memproxyd exported is the parent the upstream was told about
    sent = [r for r in upstream_records(openai_fake)
            if r["json"].get("messages") == [{"role": "user", "content": "exported"}]]
    our_span = sent[0]["headers"]["traceparent"].split("-")[2]
    assert our_span != CLIENT_SPAN and bytes.fromhex(our_span) in exported
