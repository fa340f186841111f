# Two entry points for a new user: `make demo` and `make test`.
# Both create (or reuse) .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
# A pinned CPU-friendly torch; override e.g. `make demo TORCH="torch --index-url <your index>"`.
TORCH  ?= torch==2.13.0
EXTRAS ?= cpu,train,dev,triton,dicom
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.usseg-installed

.PHONY: demo test bench bench-quick install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/usseg-demo --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

# The full benchmark (trains its models once into runs/bench/models, then about 20 minutes of
# timing): run it on an otherwise idle machine. `bench-quick` is the CI-sized run.
bench: $(STAMP)
	$(BIN)/usseg bench --out runs/bench

bench-quick: $(STAMP)
	$(BIN)/usseg bench --quick --out runs/bench-quick

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
