# Entry points, each building their own virtual environment from scratch
# with the pinned versions in constraints.txt:
#   make example   runs examples/regularization.py in full: MLPs with and
#                  without our dropout layers (BACKEND=torch for another backend)
#   make test      runs the test suite once per Keras backend
#   make bench     times dropout ops and fit() steps, ours vs each backend's own
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
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/fit.py

clean:
	rm -rf $(VENV)
