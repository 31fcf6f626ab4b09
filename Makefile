# The README's two commands: `make run` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run CONFIG=~/.config/memproxyd/memproxyd.toml ARGS="--port 9000 --state-dir /tmp/m"`
CONFIG ?= etc/memproxyd.toml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install browser agents run test test-e2e test-e2e-newest check bench soak install-service clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/memproxyd --config $(CONFIG) $(ARGS)

# Offline but for PyPI (the .venv): every upstream is a fake on loopback, every client an
# official SDK. The tests that drive real agent CLIs or a browser are `make test-e2e`.
test: install
	$(BIN)/python -m pytest -q -m "not e2e" $(PYTEST_ARGS)

# The real clients: Claude Code, Codex, Gemini CLI, opencode and Continue's cn from npm (pinned
# in tests/agents.py, into ~/.cache/memproxyd-test-agents, once), and the /ui page in
# Debian's chromium (apt-get, as root). What cannot be installed skips, saying why.
test-e2e: install browser agents
	$(BIN)/python -m pytest -q -m e2e $(PYTEST_ARGS)

agents: install
	$(BIN)/python -m tests.agents

# The same tests with every agent CLI at the newest version on npm (in
# ~/.cache/memproxyd-test-agents-newest): what a new user installs today. Not run by CI.
test-e2e-newest: install browser
	MEMPROXYD_AGENTS_NEWEST=1 $(BIN)/python -m tests.agents
	MEMPROXYD_AGENTS_NEWEST=1 $(BIN)/python -m pytest -q -m e2e $(PYTEST_ARGS)

# The /ui test drives Debian's chromium (playwright's own browser download is not used).
# Installed here when missing and possible (root with apt-get); otherwise that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  echo "installing Debian's chromium for the /ui browser test (apt-get, as root)"
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	        >/dev/null || echo "chromium could not be installed: the /ui browser test will skip"; \
	    else echo "no chromium (needs root and apt-get to install): the /ui browser test will skip"; fi; }

check: install
	$(BIN)/memproxyd --check --config $(CONFIG) $(ARGS)

# The published comparison (README, Benchmarks): memproxyd and the LiteLLM proxy on one fake
# upstream. matplotlib (the chart) is bench-only, installed here, never a runtime dependency;
# the proxy gets its own venv under .bench/ (scripts/bench_peer.sh).
BENCH_ARGS ?=
bench: install
	$(BIN)/python -c "import matplotlib" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet "matplotlib>=3.8,<4" \
		|| echo "bench: matplotlib not installed, no chart"
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# a few minutes of sustained load on loopback, watched for growth (SOAK_ARGS="--seconds 60")
soak: install
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

install-service: install
	$(BIN)/python scripts/install_service.py $(SERVICE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
