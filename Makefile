# Two entry points for a fresh machine: `make demo` and `make test`. Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck unit deps-debian code-server bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

deps-debian:
	bash scripts/install-debian-deps.sh

code-server: deps-debian
	bash scripts/install-code-server.sh

# Two local demo backends named gpu and cpu, and the proxy in front of them.
demo: $(STAMP)
	$(PY) -m proxy.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check proxy provisioning

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole suite: lint, types, and every test (real nginx, lsyncd, sshd, Prometheus, code-server,
# Chromium). pytest exits non-zero on any failure and also when it collects no test at all.
test: deps-debian code-server $(STAMP) lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: deps-debian $(STAMP)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
