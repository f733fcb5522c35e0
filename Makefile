# handlib: `make demo` runs the main job, `make test` runs every test and notebook (the CI command).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-notebooks lab bench lint clean

# Fresh machine → .venv with torch (pinned CPU wheel by default; GPU users: make TORCH_SPEC=... ) then handlib[dev].
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,real]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) data_scripts/get_pretrained.py
	touch $(STAMP)

install: $(STAMP)

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
	$(VENV)/bin/ruff check handlib tests benchmarks data_scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
