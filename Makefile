# Entry points, each building their own virtual environment from scratch
# with the pinned versions in constraints.txt:
#   make example   runs examples/regularization.py in full: MLPs with and
#                  without our dropout layers (BACKEND=torch for another backend)
#   make test      runs the test suite once per Keras backend
#   make bench     runs the benchmarks (dropout ops, fit() steps, DropConnect
#                  cost and memory, backward-pass memory, Monte-Carlo
#                  predictions, per-call latency on small tensors), ours vs
#                  each backend's own, and writes docs/performance.md
PYTHON ?= python3
VENV ?= .venv
BACKEND ?= jax
BACKENDS ?= tensorflow jax torch
PY := $(VENV)/bin/python

.PHONY: example test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,examples]" \
		tensorflow-cpu jax torch
	touch $@

example: $(VENV)/.installed
	KERAS_BACKEND=$(BACKEND) $(PY) examples/regularization.py

test: $(VENV)/.installed
	$(PY) scripts/matrix.py $(BACKENDS)

bench: $(VENV)/.installed
	$(PY) benchmarks/engine.py --json benchmarks/results/engine.json
	$(PY) benchmarks/fit.py --json benchmarks/results/fit.json
	$(PY) benchmarks/drop_connect.py --json benchmarks/results/drop_connect.json
	$(PY) benchmarks/backward_memory.py --json benchmarks/results/backward_memory.json
	$(PY) benchmarks/mc_predict.py --json benchmarks/results/mc_predict.json
	$(PY) benchmarks/latency.py --json benchmarks/results/latency.json
	$(PY) benchmarks/report.py --results benchmarks/results --out docs/performance.md

clean:
	rm -rf $(VENV)
