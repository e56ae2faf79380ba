# Entry points for a fresh machine: `make demo`, `make check` (before each commit) and `make test`
# (everything; what CI runs). Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The tests `make check` leaves out: those that need code-server, Chromium, a container build or a
# bed of network namespaces, and the load tests (wrk, the soak, 10k idle connections, a GiB each
# way, the 1 GiB + 100k-file sync): they kept the lane CPU-bound past 4 minutes on two cores. The
# pytest markers are in pyproject.toml.
HEAVY := codeserver or browser or container or netns or load or oidc
# `make test` fails when the suite covers less of proxy/ and provisioning/ than this (percent of
# lines of the code the pytest process runs). Measured 87.0% on the whole suite (2026-12-04,
# `pytest --cov`, 542 tests); the floor sits three points under it.
COVERAGE_FLOOR ?= 84

.PHONY: demo test check lint typecheck unit deps-debian code-server oidc-provider bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The data plane compiled with mypyc, in place (scripts/compile_dataplane.py): about a fifth less
# CPU per request. Rebuilt when any source under proxy/ changes; proxy/compiled.py runs the sources
# instead of a build older than them, so a plain `pytest` after an edit is never stale.
COMPILED := proxy/dataplane/compiled.json
$(COMPILED): $(STAMP) scripts/compile_dataplane.py $(shell find proxy -name '*.py')
	$(PY) scripts/compile_dataplane.py

deps-debian:
	bash scripts/install-debian-deps.sh

code-server: deps-debian
	bash scripts/install-code-server.sh

# The OpenID provider the sign-in tests start (tests/auth/), on code-server's Node 24.
oidc-provider: code-server
	bash scripts/install-oidc-provider.sh

# Two local demo backends named gpu and cpu, and the proxy in front of them.
demo: $(STAMP) $(COMPILED)
	$(PY) -m proxy.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check proxy provisioning tests bench

# proxy/, provisioning/ and tests/ in one run (pyproject.toml); bench/ in a second, with bench/ on
# the path: its scripts import their helpers as `peers`, while tests/bench imports `bench.peers`.
typecheck: $(STAMP)
	$(VENV)/bin/mypy
	MYPYPATH=bench $(VENV)/bin/mypy --explicit-package-bases bench

unit: $(STAMP) $(COMPILED)
	$(PY) -m pytest $(PYTEST_ARGS)

# Before each commit: lint, types and every test that needs no code-server, Chromium, container
# build or namespace bed, and no load test (real nginx, lsyncd, sshd and Prometheus included).
# Four workers on two cores: most of these tests wait on real processes (sshd, lsyncd, the proxy)
# rather than compute. Measured 3 min 15 s for the whole target (pytest 3 min 06 s) with three
# other test suites on the machine (load average 4); serial, the same tests took 11 minutes.
check: deps-debian $(STAMP) $(COMPILED) lint typecheck
	DUMONT_EXPECT_COMPILED=1 $(PY) -m pytest -m "not ($(HEAVY))" -n 4 --dist worksteal $(PYTEST_ARGS)

# The whole suite: lint, types, and every test (real nginx, lsyncd, sshd, Prometheus, code-server,
# Chromium, containers, namespaces), with a coverage report of proxy/ and provisioning/ that fails
# under COVERAGE_FLOOR. pytest exits non-zero on any failure and when it collects no test at all.
# The suite runs the compiled data plane, which is what ships; coverage cannot see into compiled
# modules, so the data plane's own tests run a second time on its sources (the build a machine
# without a C compiler runs), and their coverage is added before the floor is checked.
test: deps-debian code-server oidc-provider $(STAMP) $(COMPILED) lint typecheck
	DUMONT_EXPECT_COMPILED=1 $(PY) -m pytest --cov --cov-report= $(PYTEST_ARGS)
	DUMONT_PURE_PYTHON=1 $(PY) -m pytest -m "not ($(HEAVY))" -n 2 --dist worksteal \
		--cov --cov-append --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR) \
		tests/proxy tests/security tests/test_compiled.py $(PYTEST_ARGS)

bench: deps-debian $(STAMP) $(COMPILED)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage build proxy/dataplane/*.so $(COMPILED)
