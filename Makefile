# The README's commands. `make test` builds .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint clean demo soak bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools  # venv's bundled setuptools has known vulnerabilities (.ci/audit.py)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Whole test modules run on TEST_WORKERS parallel pytest-xdist workers: most of the suite waits on
# real Prometheus and Alertmanager timers, not on the CPU. A module stays on one worker, so that the
# stack its tests share starts once; slow modules go first (tests/conftest.py). TEST_WORKERS=0 runs
# everything in this process.
TEST_WORKERS ?= 4

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The whole product on loopback against the simulator; one guest hangs and is reset (docs/demo.md).
demo:
	sh scripts/demo-prereqs.sh
	$(MAKE) --no-print-directory $(VENV)/.installed
	$(VENV)/bin/vmhealth demo $(DEMO_ARGS)

# 10 minutes of 10,000 simulated agents against the exporter with Prometheus scraping (bench/soak.py;
# SOAK_ARGS="--minutes 2 --guests 2000" for less). Result: bench/results/soak/soak.{json,md}.
soak: $(VENV)/.installed
	$(PY) bench/soak.py $(SOAK_ARGS)

# vmhealth next to prometheus-pve-exporter, Pushgateway and node_exporter, the webhook and the whole
# stack's detection latency (bench/run_all.py, ~10-15 minutes on 2 cores); rewrites docs/benchmarks.md.
# BENCH_ARGS="--only ingest_rate" for one script, "--smoke" for seconds.
bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run_all.py $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
