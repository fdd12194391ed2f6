# The two commands a newcomer needs: `make demo` (main job) and `make test` (the suite).
# Both bootstrap everything from the lockfile on a machine with only Python 3.11, pip and make.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen --no-sync

.PHONY: setup demo test stop status lint format typecheck clean

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --quiet

demo: setup
	$(RUN) mlops demo

test: setup
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
