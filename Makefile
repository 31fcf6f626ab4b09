# The README's two commands: `make run` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run CONFIG=~/.config/memproxyd/memproxyd.toml ARGS="--port 9000 --state-dir /tmp/m"`
CONFIG ?= etc/memproxyd.toml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install browser run test check bench soak install-service clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/memproxyd --config $(CONFIG) $(ARGS)

test: install browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The /ui test drives Debian's chromium (playwright's own browser download is not used).
# Installed here when missing and possible (root with apt-get); otherwise that test skips.
browser:
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
