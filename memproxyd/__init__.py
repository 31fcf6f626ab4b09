"""memproxyd: a local memory gateway for AI clients. One folder per layer::

    memproxyd/            core: daemon (entry point, lifecycle) app (the app factory, the one module
                          that imports every layer) listeners config registry state appkeys call
                          errors deployments auth identity addresses sessions cookies tracing logs
      api/                what faces the network, each module a thin add_routes(app): openai
                          anthropic responses memories admin usage health ui (+ static/) openapi,
                          middleware (auth, identity, errors), validate + checks (request bodies)
      proxy/              one model call: pipeline (new_call, proxy) upstream (native forwarding,
                          upstream_headers) translate (the one litellm owner) failover (retries,
                          fallbacks) internal_call (memproxyd's own model calls) access ([access])
      observe/            what happened: record (the middleware) meter (usage from replies) ledger
                          prices metrics otel
      ctl/                memproxyctl: cli client memory mcp usage __main__ (talks HTTP to the daemon)
      memory/             service tap turn turn_cache block redact outbox distill base terms vectors,
                          supermemory (the Supermemory backend)
        wire/             one adapter per wire protocol: openai anthropic responses completions,
                          the per-client table (clients) and the reply reader (sse)
        sqlite/           the embedded backend: store db rows writes lexical maxscore search_worker
                          search_process
        postgres/         the shared backend: store db outbox term_stats vectors

The layer rules (``tests/test_layout.py``) are in the README, Architecture.
"""
__version__ = "0.1.0"
