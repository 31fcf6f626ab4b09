"""memproxyd: a local memory gateway for AI clients. One folder per layer::

    memproxyd/            core: daemon (entry point, lifecycle) app (the app factory, the one module
                          that imports every layer) listeners config registry state appkeys call
                          errors deployments auth identity addresses sessions cookies tracing logs
      api/                what faces the network, each module a thin add_routes(app): openai
                          anthropic responses gemini memories admin usage health ui (+ static/)
                          openapi, middleware (auth, identity, errors), validate + checks
      proxy/              one model call: pipeline (new_call, proxy) upstream (native forwarding,
                          upstream_headers) translate (the one litellm owner) demo (the offline
                          model's replies made whole) failover (retries, fallbacks) internal_call
                          (memproxyd's own model calls) access ([access]) catalog (/v1/models)
      observe/            what happened: record (the middleware) meter (usage from replies) ledger
                          prices metrics otel
      ctl/                memproxyctl: cli client ideconfig doctor memory mcp usage __main__
                          (talks HTTP to the daemon)
      memory/             service tap turn turn_cache journal (each turn's block) block redact
                          outbox distill base terms vectors, supermemory (the Supermemory backend)
        wire/             one adapter per wire protocol: openai anthropic responses completions
                          gemini, the per-client table (clients) and the reply reader (sse)
        sqlite/           the embedded backend: store db rows writes lexical maxscore search_worker
                          search_process journal
        postgres/         the shared backend: store db outbox term_stats vectors journal

The layer rules (``tests/test_layout.py``) are in the README, Architecture.
"""
__version__ = "0.1.0"
