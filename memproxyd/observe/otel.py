"""Span export through OpenTelemetry: only with ``[tracing] otlp_endpoint`` set and the
``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http`` packages installed.
Without them nothing here is imported and tracing is ``tracing.py``'s ids alone.

One server span per request, exported in batches (``BatchSpanProcessor``: off the request
path) to the OTLP/HTTP endpoint. Its trace id is the request's (the client's, or the one
``tracing.begin`` made up: the id generator below hands it to the SDK), its parent the
client's span, and its span id is the parent id memproxyd sends upstream in ``traceparent``.

    exporter = SpanExporter.create(config.tracing)   # None: not configured or not installed
    span = exporter.start(trace, "POST /v1/chat/completions")
    exporter.end(span, {"http.response.status_code": 200})
    exporter.close()                                 # flushes what is left
"""
from __future__ import annotations

import logging
import random

from memproxyd import tracing
from memproxyd.config import TracingConfig

log = logging.getLogger(__name__)


class SpanExporter:
    def __init__(self, provider, tracer):
        self.provider = provider
        self.tracer = tracer

    @classmethod
    def create(cls, config: TracingConfig) -> "SpanExporter | None":
        if not config.otlp_endpoint:
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("[tracing] otlp_endpoint is set but the opentelemetry packages are "
                        "not installed (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-"
                        "http): spans are not exported")
            return None
        provider = TracerProvider(resource=Resource.create({"service.name":
                                                            config.service_name}),
                                  id_generator=_RequestIds())
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=config.otlp_endpoint)))
        log.info("spans exported endpoint=%s", config.otlp_endpoint)
        return cls(provider, provider.get_tracer("memproxyd"))

    def start(self, trace: tracing.Trace, name: str):
        """The request's server span, child of the client's span when it sent one."""
        from opentelemetry import trace as api
        context = None
        if trace.parent_id:
            parent = api.SpanContext(int(trace.trace_id, 16), int(trace.parent_id, 16),
                                     is_remote=True,
                                     trace_flags=api.TraceFlags(int(trace.flags, 16)))
            context = api.set_span_in_context(api.NonRecordingSpan(parent))
        return self.tracer.start_span(name, context=context, kind=api.SpanKind.SERVER)

    @staticmethod
    def span_id(span) -> str:
        return format(span.get_span_context().span_id, "016x")

    @staticmethod
    def end(span, attributes: dict) -> None:
        span.set_attributes(attributes)
        span.end()

    def close(self) -> None:
        self.provider.shutdown()


class _RequestIds:
    """The SDK's id generator, giving a root span the request's own trace id."""

    def generate_span_id(self) -> int:
        return random.getrandbits(64) or 1

    def is_trace_id_random(self) -> bool:
        return False    # a client's trace id may be anything valid

    def generate_trace_id(self) -> int:
        trace = tracing.current.get()
        return int(trace.trace_id, 16) if trace is not None else random.getrandbits(128) or 1
