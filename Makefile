# Two set-up commands (see README): `make train` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
PYTEST_ARGS ?=
# The suites run in parallel (pytest-xdist): one worker per core, at most 4 (each holds a JAX process
# with 8 fake devices), a test file per worker so that module fixtures are built once.
# XDIST=-n0 runs them in this process.
XDIST ?= -n auto --maxprocesses=4 --dist loadfile

.PHONY: train test test-slow test-proof bench clean

# The package itself is installed editable (pyproject.toml): .venv/bin/bert-jax-* entry points.
# constraints.txt pins every transitive dependency (tests/constraints_lock.py writes it from a .venv).
$(VENV)/.runtime: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt constraints.txt
	$(PY) -m pip install -q -c constraints.txt -r requirements-test.txt
	touch $@

# The main job: a short pretraining on the built-in corpus (a few minutes on a 2-core CPU).
train: $(VENV)/.runtime
	$(PY) -m bert_jax.main --config=configs/bert.py:tiny,runlocal --workdir=$(WORKDIR)

# The test suite (572 tests, about 7 minutes on 2 cores; docs/testing.md has its last timing).
test: $(VENV)/.test
	$(PY) -m pytest -q $(XDIST) tests -m "not slow and not proof" $(PYTEST_ARGS)

# Long checks (76 tests, about 30 minutes on 2 cores): every family x every sharding preset, two processes via
# jax.distributed, a 600-step BERT pretraining run, fine-tuning, QA/tagging, distillation, notebooks.
# CI runs them after `make test`.
test-slow: $(VENV)/.test
	$(PY) -m pytest -q $(XDIST) tests -m "slow and not proof" $(PYTEST_ARGS)

# Proofs too long for CI (README gives their last results): MiniLM fine-tuned on SST-2, ours vs HF; SQuAD
# and CoNLL runs; distillation on SST-2; ALBERT and ELECTRA 600-step runs and ELECTRA's 4,000-step
# recipe; the ablation sweep killed and restarted.
test-proof: $(VENV)/.test
	$(PY) -m pytest -q $(XDIST) tests -m proof $(PYTEST_ARGS)

# Input-pipeline throughput vs HF's DataCollatorForLanguageModeling (prints a table).
bench: $(VENV)/.test
	$(PY) -m bert_jax.benchmarks.data_pipeline

clean:
	rm -rf $(VENV) runs .pytest_cache
