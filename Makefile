# One command to run the gateway (make run), one to pass every test (make test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/gateway.toml
SYSTEM_TOOLS := nginx wrk redis-server

.PHONY: run test lint typecheck unit bench bench-micro build sysdeps clean

run: build
	$(BIN)/lambdagate run -c $(CONFIG)

test: build sysdeps lint typecheck unit

# --- setup -------------------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q 'cython>=3.0' 'setuptools>=77' wheel
	$(BIN)/pip install -q --no-build-isolation -e '.[dev]'
	touch $@

# Rebuild the compiled hot path whenever a Cython source changes.
build: $(VENV)/.deps
	$(BIN)/python setup.py -q build_ext --inplace 2>&1 | grep -v '^Compiling\|^\[' || true
	@$(BIN)/python -c 'import gateway._fastpath.parser, gateway._fastpath.http, gateway._fastpath.router'

# Debian packages the tests and benchmarks start for real (installed when absent; needs root).
sysdeps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# --- checks ------------------------------------------------------------------------------------

lint: build
	$(BIN)/ruff check gateway plugins _fastpath tests bench
	$(BIN)/ruff format --check gateway plugins _fastpath tests bench

typecheck: build
	@mkdir -p build/typing/gateway
	@ln -sfn $(CURDIR)/_fastpath build/typing/gateway/_fastpath
	@ln -sfn $(CURDIR)/plugins build/typing/gateway/plugins
	$(BIN)/mypy

unit: build
	$(BIN)/pytest -q

# --- benchmarks --------------------------------------------------------------------------------

bench: build sysdeps bench-micro
	$(BIN)/python bench/proxy_vs_nginx.py
	$(BIN)/python bench/idle_connections.py
	$(BIN)/python bench/proxy_vs_nginx.py --gateway-config bench/scenarios/auth_ratelimit.toml.in --header "apikey: bench-key"
	$(BIN)/python bench/proxy_vs_nginx.py --gateway-config bench/scenarios/cache_hit.toml.in --nginx-template upstream.conf.in
	$(BIN)/python bench/proxy_vs_nginx.py --redis --gateway-config bench/scenarios/redis_ratelimit.toml.in

bench-micro: build
	$(BIN)/pytest -q bench/micro --benchmark-only -p no:cacheprovider

clean:
	rm -rf build $(VENV) _fastpath/*.c _fastpath/*.so *.egg-info
