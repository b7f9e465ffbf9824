# Two entry points for a fresh machine: `make demo` (the main job on bundled data) and `make test`.
# Both create the virtual environment on first use. Override VENV to reuse one elsewhere.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision builds that pip finds on this kind of machine; override for other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install demo test bench

install:
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	@$(PY) -m pip install -q -e '.[test,diffusers]'
	@# --no-deps: torchattacks pins requests~=2.25.1 but never imports requests (see setup.cfg)
	@$(PY) -c "import torchattacks" 2>/dev/null || $(PY) -m pip install -q --no-deps 'torchattacks>=3.5'

demo: install
	$(VENV)/bin/aerobust demo --out demo-out

test: install
	$(PY) -m pytest $(PYTEST_ARGS)
