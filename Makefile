# Every target sets up .venv on first use, so a fresh clone needs only `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The Fashion-MNIST few-shot reproduction: BUDGET=cpu (at most about 2 hours on 2 cores), cpu-ablation
# (KD-DLGAN's Table 4 on the proxy, about 1.5 hours) or gpu; then the memorise/ideal reference FIDs.
BUDGET ?= cpu
# Test processes: one per core is fastest here (each test process runs one thread).
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: test test-gpu test-long demo bench faults reproduce-fmnist venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m cuda

# Learning checks that need minutes of CPU each (BigGAN's class conditioning on Fashion-MNIST).
test-long: $(STAMP)
	$(PY) -m pytest -q -m long -n $(TEST_WORKERS) --durations=15

bench: $(STAMP)
	$(PY) bench/bench_networks.py

# 20 SIGKILLs of a small CPU run, each resumed from its outdir; appends the figures to docs/benchmarks.md.
faults: $(STAMP)
	$(PY) bench/faults.py --kills=20 --outdir=runs/faults --report=docs/benchmarks.md

reproduce-fmnist: $(STAMP)
	$(PY) bench/compare.py --outdir=runs/fmnist-$(BUDGET) --budget=$(BUDGET)
	$(PY) -m bench.fmnist.reference --outdir=runs/fmnist-$(BUDGET)

demo: $(STAMP)
	DEMO_PYTHON=$(abspath $(PY)) bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache
