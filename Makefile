PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/hacontrol dev

test: $(STAMP)
	$(VENV)/bin/ruff check hacontrol tests chaos bench
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check hacontrol tests chaos bench

bench: $(STAMP)
	$(PY) bench/controllers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
