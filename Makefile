# simapp — the commands a user and CI need. `make install` is idempotent.
# Python 3.11 (or 3.12): python3.11 when the machine has it, else python3 (checked by `make install`).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else "simapp needs Python 3.11 or 3.12, and $(PYTHON) is " + sys.version.split()[0] + ": run make PYTHON=/path/to/python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Set up the demo (demo admin, bundled CLINC150 and ODDS cardio, trained and indexed) and serve it at
# http://127.0.0.1:8000; again, it reuses what exists. E.g. make demo DEMO_ARGS="--no-serve".
demo: install
	$(PY) manage.py demo $(DEMO_ARGS)

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
	$(PY) -m bench.load
	$(PY) -m bench.fuzz --examples 200
	$(PY) -m bench.demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
