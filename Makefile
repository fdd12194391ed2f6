# The two commands a newcomer needs: `make demo` (main job) and `make test` (the suite).
# Both bootstrap everything from the lockfile on a machine with only Python 3.11, pip and make.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen --no-sync

.PHONY: setup browser demo stack test stop status lint format typecheck clean
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --quiet

# Debian's Chromium, for the test that drives the Prefect UI in a headless browser.
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

demo: setup
	$(RUN) mlops demo

# Prefect server + UI, MLflow server + UI, a worker, the deployments and the service; Ctrl-C stops it all.
stack: setup
	$(RUN) mlops stack

test: setup browser
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) pytest

stop: setup
	$(RUN) mlops stop

status: setup
	$(RUN) mlops status

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

clean: stop
	rm -rf .mlops
