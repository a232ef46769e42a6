# mmdet-odam: `make demo`, `make test`. Both create .venv when missing and
# install into it once; a stamp keyed on the requirement files (and
# TORCH_SPEC) makes the next runs skip the install.
#
#   TORCH_SPEC   torch to install (default torch==2.13.0, CPU build through
#                PIP_FIND_LINKS). `make test TORCH_SPEC=` keeps the torch
#                already in the venv (e.g. a CUDA build you installed).
#   MMCV_SPEC    mmcv==2.1.0: a wheel found through PIP_FIND_LINKS, else a
#                source build with compiled ops (slow: ~20 min on 2 cores).
#   PYTHON       interpreter that creates the venv (python3, 3.8-3.11).
#   TESTS        what `make test` runs (default: tests).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
MMCV_SPEC ?= mmcv==2.1.0
MAX_JOBS ?= 2
TESTS ?= tests

# The mmcv wheel built for this torch sits in ../shared/wheels on the
# project's machines: append it to PIP_FIND_LINKS (never replace it: that
# variable may already point at the CPU torch wheel).
SHARED_WHEELS := $(wildcard $(abspath ../shared/wheels))
ifneq ($(SHARED_WHEELS),)
ifeq ($(findstring $(SHARED_WHEELS),$(PIP_FIND_LINKS)),)
export PIP_FIND_LINKS := $(strip $(PIP_FIND_LINKS) $(SHARED_WHEELS))
endif
endif

VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
REQ_FILES := requirements/runtime.txt requirements/mminstall.txt \
	requirements/tests.txt requirements/optional.txt setup.py
STAMP := $(VENV)/.installed-$(shell { cat $(REQ_FILES); \
	echo '$(TORCH_SPEC) $(MMCV_SPEC)'; } | sha1sum | cut -c1-12)

.PHONY: venv install test demo clean-venv

venv install: $(STAMP)

$(STAMP):
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_SPEC)" ]; then \
		echo "== installing $(TORCH_SPEC)"; \
		$(PIP) install -q "$(TORCH_SPEC)" || exit 1; \
	fi
	@$(VPY) -c "import torch" 2>/dev/null || { echo "torch is missing in \
	$(VENV): install it there or leave TORCH_SPEC at its default" >&2; exit 1; }
	@if $(VPY) -c "import mmcv, mmcv.ops, sys; \
		sys.exit(mmcv.__version__ != '$(MMCV_SPEC)'.split('==')[-1])" \
		2>/dev/null; then \
		echo "== $(MMCV_SPEC) with ops already installed"; \
	elif echo "== looking for a $(MMCV_SPEC) wheel (PIP_FIND_LINKS=$$PIP_FIND_LINKS)" && \
		$(PIP) install -q --only-binary=mmcv "$(MMCV_SPEC)"; then \
		echo "== $(MMCV_SPEC) installed from a wheel"; \
	else \
		echo "== no $(MMCV_SPEC) wheel: building it from source with ops"; \
		$(PIP) install "setuptools<70" wheel ninja && \
		MMCV_WITH_OPS=1 MAX_JOBS=$(MAX_JOBS) $(PIP) install \
			--no-build-isolation "$(MMCV_SPEC)" && \
		$(PIP) install --upgrade "setuptools<81" || exit 1; \
	fi
	$(PIP) install -q -r requirements/runtime.txt -r requirements/tests.txt
	$(PIP) install -q --no-deps -r requirements/optional.txt
	$(PIP) install -q -e . --no-deps
	@rm -f $(VENV)/.installed-*
	@touch $@

# Fails on any pytest failure, also on exit 5 (no tests collected).
test: $(STAMP)
	$(VPY) -m pytest $(TESTS) -q

demo: $(STAMP)
	PYTHON=$(abspath $(VPY)) bash tools/demo.sh

clean-venv:
	rm -rf $(VENV)
