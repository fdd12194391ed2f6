# The two commands a newcomer needs: `make demo` (main job) and `make test` (the suite).
# Both bootstrap everything from the lockfile on a machine with only Python 3.11, pip and make.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen --no-sync

.PHONY: setup tools demo stack test stop status lint format typecheck clean bench-serving bench-pipeline bench-rollout bench-faults bench-soak
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --quiet

# Debian's Chromium (the test that drives the Prefect UI) and wrk (the serving benchmark's load generator).
tools:
	@test -x /usr/bin/chromium -a -x /usr/bin/wrk || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		chromium wrk >/dev/null; }

demo: setup
	$(RUN) mlops demo

# Prefect server + UI, MLflow server + UI, a worker, the deployments and the service; Ctrl-C stops it all.
stack: setup
	$(RUN) mlops stack

test: setup tools
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) pytest

# Benchmarks: each prints a Markdown table and writes it under benchmarks/results/.
bench-serving: setup tools
	$(RUN) python -m benchmarks.serving

bench-pipeline: setup
	$(RUN) python -m benchmarks.pipeline

bench-rollout: setup
	$(RUN) python -m benchmarks.rollout

# Every fault under steady load, registry down for a full minute (~6 min).
bench-faults: setup
	$(RUN) python -m benchmarks.faults

# 30 minutes at 200 req/s with a deploy or rollback every 150 s; MINUTES=3 for a short one.
MINUTES ?= 30
bench-soak: setup
	$(RUN) python -m benchmarks.soak --minutes $(MINUTES)

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
