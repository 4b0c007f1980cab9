# Two commands on a fresh machine: `make run` (the demo) and `make test` (every test).
# Each installs what it needs: Debian packages when missing, the venv, the dev IdP's npm packages.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := dev/idp/node_modules/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run run-tls test bench profile lint system-deps deps clean

run: deps
	@$(PY) -m dev.run

# The same demo behind nginx on https://localhost:8443 (TLS_PORT), with a certificate made for it.
run-tls: deps
	@sh scripts/system-deps.sh nginx
	@BFF_TLS=1 $(PY) -m dev.run

test: deps
	@sh scripts/system-deps.sh docker-compose chromium nginx
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n 2 --dist loadgroup

bench: deps $(BENCH_STAMP)
	@sh scripts/system-deps.sh wrk
	$(PY) -m bench.run

# Where /bff/user's CPU goes under load, beside the naive app (py-spy on a gunicorn worker).
profile: deps $(BENCH_STAMP)
	@sh scripts/system-deps.sh wrk
	$(PY) -m bench.profile_load

lint: $(PY_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

deps: system-deps $(PY_STAMP) $(NODE_STAMP)

system-deps:
	@sh scripts/system-deps.sh

$(PY_STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(BENCH_STAMP): $(PY_STAMP) requirements-bench.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	touch $@

$(NODE_STAMP): dev/idp/package.json dev/idp/package-lock.json
	cd dev/idp && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) dev/idp/node_modules .run .pytest_cache .ruff_cache
