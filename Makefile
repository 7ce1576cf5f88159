# labelloop: the two commands a new user types are `make demo` and `make test`.
# Environments are cached in $(LABELLOOP_CACHE), keyed by their lock files (scripts/venv.sh), so a warm run
# installs nothing. `.venv` and `.ls-venv` are symlinks to them.
SHELL := /bin/bash
export LABELLOOP_CACHE ?= $(HOME)/.cache/labelloop
# Redis for tests and the demo; .ci/run starts one when none answers.
export LABELLOOP_TEST_REDIS_URL ?= redis://127.0.0.1:6379
PYTEST_ARGS ?=

VENV_MAIN = scripts/venv.sh main requirements/main.lock torch==2.14.1 torchvision==0.29.1
VENV_LS = scripts/venv.sh label-studio requirements/label-studio.lock

.PHONY: help env ls-env tools lint typecheck test test-fast demo stop bench lock clean readme

help:
	@echo "make demo   install what is needed and run the main job on a generated sample project"
	@echo "make test   install what is needed and run lint, type checks and the whole test suite"
	@echo "make stop   stop what make demo started"
	@echo "make bench  run the benchmarks in bench/ (figures + same-run ratios)"

# The main environment (torch, transformers, ms-swift, flask, rq, test tools) plus labelloop itself, editable.
# The stamp lives in this clone, so a new clone re-points the shared cached environment at its own sources.
.stamps/env: requirements/main.lock pyproject.toml scripts/venv.sh
	@mkdir -p .stamps
	@venv=$$($(VENV_MAIN)) && ln -sfn "$$venv" .venv
	@.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

env: .stamps/env

# Label Studio in its own environment, plus a migrated template data dir (first migration takes ~55 s).
.stamps/ls-env: requirements/label-studio.lock scripts/venv.sh
	@mkdir -p .stamps
	@venv=$$($(VENV_LS)) && ln -sfn "$$venv" .ls-venv
	@touch $@

ls-env: .stamps/ls-env env
	@.venv/bin/python -m ml_backend.studio template --ls-venv .ls-venv

# Debian packages the tests need, installed once with apt-get (as root, else through sudo): chromium, which the
# annotator-view test drives with Playwright (never `playwright install`: no browser download), and docker-compose
# 1.29, which validates docker/docker-compose.yml against the Compose specification without a Docker engine.
TOOLS_DEB = chromium docker-compose
tools:
	@if ! command -v chromium >/dev/null || ! command -v docker-compose >/dev/null; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "tools: installing $(TOOLS_DEB) with apt-get (one-off)"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TOOLS_DEB) >/dev/null; \
	fi

lint: env
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: env
	.venv/bin/mypy

test: env ls-env tools lint typecheck
	LABELLOOP_TEST_LS_VENV=$(CURDIR)/.ls-venv .venv/bin/pytest $(PYTEST_ARGS)

# Unit tests only (no Label Studio, no training): the inner loop while developing.
test-fast: env
	.venv/bin/pytest -m "not e2e and not slow" $(PYTEST_ARGS)

demo: env ls-env
	.venv/bin/python scripts/demo.py

stop: env
	.venv/bin/python scripts/demo.py --stop

bench: env
	.venv/bin/python bench/export.py
	.venv/bin/python bench/marks.py --set both
	.venv/bin/python bench/predict.py
	.venv/bin/python bench/loop.py

# Regenerate the README's settings table from the Settings class.
readme: env
	.venv/bin/python scripts/update_readme.py

# Regenerate requirements/main.lock from pyproject.toml in a throwaway environment.
lock:
	rm -rf .stamps/lock-venv && python3.11 -m venv .stamps/lock-venv
	.stamps/lock-venv/bin/python -m pip install --quiet --upgrade "pip>=24"
	.stamps/lock-venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	.stamps/lock-venv/bin/python -m pip install --quiet ".[dev]"
	{ echo "# Pinned environment for development, tests and the worker (make lock regenerates it)."; \
	  echo "# Install torch==2.14.1 torchvision==0.29.1 first; see scripts/venv.sh."; \
	  .stamps/lock-venv/bin/python -m pip freeze --exclude labelloop; } > requirements/main.lock
	rm -rf .stamps/lock-venv

clean:
	rm -rf .stamps .venv .ls-venv .pytest_cache .mypy_cache .ruff_cache test-output
