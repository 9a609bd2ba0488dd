# simapp — the commands a user and CI need. `make install` is idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: install
	$(PY) manage.py demo

# pytest exits 5 when it collects nothing: for us that means a broken suite, so it fails.
test: install
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; \
	exit $$rc

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) -m bench.importing
	$(PY) -m bench.indexing
	$(PY) -m bench.learning
	$(PY) -m bench.pipeline
	$(PY) -m bench.quality
	$(PY) -m bench.serving
	$(PY) -m bench.labelling

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
