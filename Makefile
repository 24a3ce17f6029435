# preftrack developer commands. `make up` runs the system, `make test` runs the tests.
PYTHON ?= /usr/bin/python3.11
VENV := .venv
BIN := $(VENV)/bin
REPOSITORY ?= model_repository
DATASET ?= synthetic

PG_URL ?= postgresql://preftrack:preftrack@127.0.0.1:5432/preftrack

.PHONY: setup up train demo postgres test test-all lint bench clean reset compose-check

# The venv is made from Debian's python3.11: Triton's python-backend stub links that exact libpython.
$(BIN)/.installed: requirements-dev.txt sdk/pyproject.toml gateway/pyproject.toml trainer/pyproject.toml dev/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -e sdk -e gateway -e 'trainer[cpu]' -e dev
	touch $@

setup: $(BIN)/.installed

train: setup
	$(BIN)/preftrack-trainer train --dataset $(DATASET) --repository $(REPOSITORY)

# Trains a first version if the repository has none, then runs Triton and the gateway until Ctrl-C.
up: setup
	$(BIN)/preftrack-dev up --dataset $(DATASET) --repository $(REPOSITORY)

# The lifelong loop on the synthetic drifting shop: a prequential replay through the live, learning stack.
demo: setup
	$(BIN)/preftrack-dev replay --dataset synthetic --rate 400 --trigger-examples 1500 --trigger-seconds 10 --out-dir var/demo

# A local PostgreSQL server for the tests (installs Debian's package when missing; needs root).
postgres:
	./.ci/postgres.sh

test: setup postgres
	PREFTRACK_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/python -m pytest

test-all: setup postgres
	PREFTRACK_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/python -m pytest -m ""

# buf (from the npm registry) lints the public API with its STANDARD rules.
BUF := .tools/node_modules/.bin/buf
$(BUF):
	mkdir -p .tools && cd .tools && npm install --silent --no-audit --no-fund @bufbuild/buf@1.75.0

lint: setup $(BUF)
	cd proto && ../$(BUF) lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway/src/preftrack_gateway sdk/src/preftrack trainer/src/preftrack_trainer dev/src/preftrack_dev
	$(BIN)/python proto/generate.py --check

bench: setup postgres
	$(BIN)/python bench/bench_serving.py
	$(BIN)/python bench/bench_quality.py
	$(BIN)/python bench/bench_adaptation.py
	$(BIN)/python bench/bench_rollout.py
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_insights.py
	# Exits 1 while the default shop misses a profile goal (docs/benchmarks.md); the rest of the benchmarks still run.
	-$(BIN)/python bench/bench_profile.py
	$(BIN)/preftrack-dev replay --dataset movielens --rate 300 --learning-rate 3e-4 --out-dir var/replay-ml

# Validates docker-compose.yml with a real Compose implementation (Docker Compose 1.29.2 from PyPI, in its own
# venv: no Docker engine needed), then checks the production shape and that its PREFTRACK_* settings exist.
COMPOSE_VENV := .venv-compose
$(COMPOSE_VENV)/.installed: docker/compose-requirements.txt
	test -x $(COMPOSE_VENV)/bin/python || $(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install --quiet -r docker/compose-requirements.txt
	$(COMPOSE_VENV)/bin/pip install --quiet --no-deps docker-compose==1.29.2
	touch $@

# Then resolves every image's pip install for the image's own Python and platform (docker/check_images.py; needs
# the package index, no Docker).
compose-check: setup $(COMPOSE_VENV)/.installed
	$(BIN)/python docker/check_compose.py $(COMPOSE_VENV)/bin/docker-compose
	$(BIN)/python docker/check_images.py

clean:
	rm -rf $(VENV) $(COMPOSE_VENV) .pytest_cache

# Forget the local stack's state: the event store (load tests and demos write into it, and a gateway replays it
# at every start) and the logs. RESET_MODELS=1 also deletes the trained versions. The pseudonym key
# (~/.config/preftrack/pseudonym.key) stays.
reset:
	rm -rf var
	if [ "$(RESET_MODELS)" = "1" ]; then find $(REPOSITORY)/preftrack -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -exec rm -rf {} +; fi
