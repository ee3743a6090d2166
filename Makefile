# Set-up, build, tests and the main job of gn_detection. Every target creates
# or reuses the virtual environment $(VENV) and builds the extension first, so
# `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
SITE := $(VENV)/.deps-installed
BUILT := $(VENV)/.gn_detection-built
CSRC := $(shell find gn_detection/layers/csrc -type f) setup.py

# The CUDA toolkit's standard root (torch otherwise guesses it from nvcc's path).
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
export MAX_JOBS ?= 2

.PHONY: setup build test demo bench clean gpu-check

setup: $(SITE)

$(SITE): requirements.txt tools/install_detectron2.sh
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade "pip>=24"
	$(PYTHON) -m pip install --quiet -r requirements.txt
	PYTHON=$(PYTHON) tools/install_detectron2.sh
	touch $@

build: $(BUILT)

$(BUILT): $(SITE) $(CSRC)
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -n 3
	$(PYTHON) -c "import gn_detection.layers as L; print('gn_detection built, CUDA kernels:', L.cuda_compiled())"
	touch $@

test: build
	$(PYTHON) -m pytest tests -q

# The main job: the built-in dataset, a GN Mask R-CNN trained from scratch on the
# CPU, COCO AP, pictures (tools/demo.py; DEMO_ARGS=--overwrite replaces output/demo).
demo: build
	$(PYTHON) tools/demo.py $(DEMO_ARGS)

# Speed on the CPU with the benchmarks' defaults: the op, then the Mask R-CNN step
# (tens of minutes on 2 cores); tables on stdout, every row in output/bench/*.json.
bench: build
	$(PYTHON) tools/benchmark_gn.py --json output/bench/gn.json
	$(PYTHON) tools/benchmark_model.py --json output/bench/model.json

# On a GPU machine whose Python already has torch with CUDA (no venv, no network):
# builds the extension in place for that GPU, runs the op tests on CUDA and the
# benchmarks on CUDA, logs and JSON into $GN_CHECK_OUT (tools/gpu_check.sh).
# Runs python3, or the PYTHON given on the command line; never the venv.
gpu-check:
	PYTHON="$(if $(filter command line,$(origin PYTHON)),$(PYTHON),python3)" tools/gpu_check.sh

clean:
	rm -rf build gn_detection/_C*.so $(BUILT)
