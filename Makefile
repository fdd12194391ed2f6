# The two commands a newcomer needs: `make demo` (main job) and `make test` (the suite).
# Both bootstrap everything from the lockfile on a machine with only Python 3.11, pip and make.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen --no-sync

.PHONY: help protos setup tools demo stack test stop status lint format clean bench-serving bench-pipeline bench-rollout bench-faults bench-soak bench-coldstart bench-batch bench-memory bench-traffic
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.DEFAULT_GOAL := help

help: ## this list: every target, one line each
	@awk -F ':.*## ' '/^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# uv installs the locked environment with bytecode compiled (pyproject.toml: compile-bytecode).
setup: ## install uv and the locked environment (uv.lock), bytecode compiled
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --quiet

# Debian's Chromium (the test that drives the Prefect UI), wrk (the serving benchmark's load generator) and
# nginx (the serving benchmark's HTTP floor; only its binary is used, with a config of the benchmark's own).
tools: ## Debian's chromium, wrk and nginx (apt, as root or through sudo), for the UI test and the benchmarks
	@test -x /usr/bin/chromium -a -x /usr/bin/wrk -a -x /usr/sbin/nginx || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		chromium wrk nginx >/dev/null; }

demo: setup ## validate, train, register, convert, gate, promote, serve; print a real prediction
	$(RUN) mlops demo

# Prefect server + UI, MLflow server + UI, a worker, the deployments and the service; Ctrl-C stops it all.
stack: setup ## Prefect and MLflow servers with UIs, a worker, the deployments, the service; Ctrl-C stops
	$(RUN) mlops stack

test: setup tools ## lint, type-check, layering contract and the whole suite (unit, flow, integration)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports --no-cache
	$(RUN) pytest

# Benchmarks: each prints a Markdown table and writes it under benchmarks/results/.
# SERVING_FLAGS=--all-peers adds Ray Serve (heavy); --seconds 5 --soak-minutes 0 for a short run.
SERVING_FLAGS ?=
bench-serving: setup tools ## ours against KServe, MLServer, PyTriton, a hand-written server, nginx: one table
	$(RUN) python -m benchmarks.serving $(SERVING_FLAGS)

bench-memory: setup tools ## the serving tree's memory: per worker, per model, per version held (~3 min)
	$(RUN) python -m benchmarks.memory

bench-pipeline: setup ## pipeline wall time per stage
	$(RUN) python -m benchmarks.pipeline

bench-rollout: setup ## swaps and rollbacks under load, then the canary, shadow and release rows (~9 min)
	$(RUN) python -m benchmarks.rollout
	$(RUN) python -m benchmarks.traffic

bench-traffic: setup ## the canary's share, the shadow's latency cost and release drills under steady load (~5 min)
	$(RUN) python -m benchmarks.traffic

# Every fault under steady load, registry down for a full minute (~6 min).
bench-faults: setup ## every fault under steady load, registry down for a full minute (~6 min)
	$(RUN) python -m benchmarks.faults

# 30 minutes at 200 req/s with a deploy or rollback every 150 s; MINUTES=3 for a short one.
MINUTES ?= 30
bench-soak: setup ## 30 min at 200 req/s with a deploy or rollback every 150 s (MINUTES=3 for short)
	$(RUN) python -m benchmarks.soak --minutes $(MINUTES)

# Cold paths from a fresh clone, with and without PYTHONDONTWRITEBYTECODE: make demo, first answer, mlops --help.
bench-coldstart: setup ## cold paths from a fresh clone: make demo, the service's first answer, mlops --help
	$(RUN) python -m benchmarks.coldstart

bench-batch: setup ## 10,000,000 rows through mlops batch-score vs in-process onnxruntime, peak memory (~3 min)
	$(RUN) python -m benchmarks.batch

stop: setup ## stop the service and whatever a killed stack left running
	$(RUN) mlops stop

status: setup ## champion and challenger versions, what the service serves, recent deployments
	$(RUN) mlops status

lint: setup ## ruff check, ruff format --check, mypy, the layering contract (lint-imports)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports --no-cache

format: setup ## ruff format and ruff check --fix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

protos: setup ## regenerate serving/grpc_v2 from the Open Inference Protocol's grpc_predict_v2.proto
	$(RUN) python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		serving/grpc_v2/grpc_predict_v2.proto serving/grpc_v2/feedback.proto
	# a pool of its own: Triton's client defines the same package (inference.*) in the default one
	sed -i 's/_descriptor_pool.Default().AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' \
		serving/grpc_v2/grpc_predict_v2_pb2.py

clean: stop ## stop everything and remove the state folder .mlops/
	rm -rf .mlops
