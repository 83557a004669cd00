# The two commands of the README's quick start:
#   make demo   run the example app under gunicorn + gevent (offline demo without OPENAI_API_KEY)
#   make test   install everything the tests need, then run every test
# `make` alone lists targets.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help demo test install

help:
	@echo "make demo   - example app on http://127.0.0.1:$${PORT:-8000} (gunicorn + gevent)"
	@echo "make test   - install test dependencies and run every test"

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gunicorn -c gunicorn.conf.py example_app:app

test: $(STAMP)
	$(PY) -m mypy
	$(PY) -m pytest
