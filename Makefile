# handlib: `make demo` runs the main job, `make test` runs every test and notebook (the CI command).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact version of every package CI tests, transitive ones included. `make install` installs
# exactly these (pip --no-deps); `make lock` regenerates the file from pyproject.toml + LOCK_TORCH.
LOCK := requirements.lock
CHECK_LOCK := .ci/check_lock.py
# The torch that `make lock` resolves with (the CPU wheel on CI's machine).
LOCK_TORCH := torch==2.13.0
# The oldest Python the lock installs on (numpy 2.4 needs 3.11, soupsieve 3.11.5; pyproject's ranges
# allow 3.10, where `pip install -e ".[dev]"` resolves older versions than the lock's).
LOCK_PYTHON := 3.11.5
# The torch that `make install` installs: by default the lock's torch line. TORCH_SPEC overrides
# torch only (the rest still comes from the lock), e.g. a CUDA build of the same version:
#   make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>" test
# Same version: the lock check passes (2.13.0+cu128 matches torch==2.13.0; torch's CUDA packages
# are extra, which only .ci/run's strict check refuses). Another version fails tests/test_setup.py.
TORCH_SPEC ?= $(shell sed -n 's/^\(torch==[^[:space:]]*\).*/\1/p' $(LOCK))

.PHONY: install lock demo test test-unit test-notebooks lab bench lint clean

# Fresh machine → .venv holding exactly the lock: pip, then every locked package but torch without
# dependency resolution, then torch ($(TORCH_SPEC), whose dependencies the lock already satisfies
# unless a CUDA build brings its own), then handlib editable, then MediaPipe's hand model.
# A non-headless OpenCV left by an older set-up is removed first; it shared cv2/ with the headless
# one, so that one is reinstalled.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; need = tuple(map(int, "$(LOCK_PYTHON)".split("."))); \
	  sys.exit(0 if sys.version_info[:3] >= need else "$(LOCK) needs Python >= $(LOCK_PYTHON); " \
	  f"$(VENV) has {sys.version.split()[0]}: rm -rf $(VENV) and make PYTHON=<a python $(LOCK_PYTHON) or newer> install, " \
	  "or pip install -e \".[dev]\" for pyproject'"'"'s ranges")'
	$(PY) -m pip install -q "$$(grep -m1 '^pip==' $(LOCK))"
	for p in opencv-contrib-python opencv-python; do \
	  if $(PY) -m pip show -q $$p 2>/dev/null; then \
	    $(PY) -m pip uninstall -q -y $$p && \
	    $(PY) -m pip install -q --no-deps --force-reinstall "$$(grep -m1 '^opencv-python-headless==' $(LOCK))"; \
	  fi; done
	grep -v '^torch==' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(PY) -m pip install -q --no-deps -r $(VENV)/lock-without-torch.txt
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) data_scripts/get_pretrained.py
	touch $(STAMP)

install: $(STAMP)

# Regenerate $(LOCK): resolve pyproject's .[dev] + $(LOCK_TORCH) in a fresh temporary venv, freeze.
lock:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install -q "$(LOCK_TORCH)" -e ".[dev]"; \
	"$$tmp/venv/bin/python" $(CHECK_LOCK) --write $(LOCK)

demo: $(STAMP)
	$(PY) -m handlib demo --out runs/demo

test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest tests -q

test-notebooks: $(STAMP)
	HANDLIB_PROFILE=ci $(PY) -m pytest --nbval-lax notebooks -q -p no:cacheprovider

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

bench: $(STAMP)
	$(PY) benchmarks/bench_hand_model.py

lint: $(STAMP)
	$(VENV)/bin/ruff check handlib tests benchmarks data_scripts .ci

clean:
	rm -rf $(VENV) runs .pytest_cache
