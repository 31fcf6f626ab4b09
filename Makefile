# The README's two commands: `make run` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= etc/memproxyd.toml
PYTEST_ARGS ?=

.PHONY: install run test check bench soak install-service clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/memproxyd --config $(CONFIG)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

check: install
	$(BIN)/memproxyd --check --config $(CONFIG)

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
