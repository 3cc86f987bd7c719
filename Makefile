# refseg-d2: install, test and demo entry points (see README.md).
PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
STAMP      := $(VENV)/.refseg_installed
WEIGHTS    ?= official
# PyTorch wheel index for another CUDA build (empty: PyPI's torch, CUDA 13.0, driver >= 580),
# e.g. make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_INDEX ?=

.PHONY: install test demo clean-venv

install: $(STAMP)

$(STAMP): Makefile setup.py tools/install_stack.sh tools/install_detectron2.sh tools/check_torch_build.py
	TORCH_INDEX="$(TORCH_INDEX)" bash tools/install_stack.sh "$(PYTHON_SYS)" "$(VENV)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/run_demo.py --weights $(WEIGHTS)

clean-venv:
	rm -rf $(VENV)
