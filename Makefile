# The two commands of the README: `make run` (the main job) and `make test`.
# Each creates the virtualenv, installs what it needs and makes sure RabbitMQ runs.

# Quiet when a candidate is missing: pyenv's shims exist for versions that are not
# installed and would print "command not found" for each.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 \
	&& $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
INSTALLED_BENCH := $(VENV)/.installed-bench

.PHONY: run demo test lint check-python install rabbitmq clean bench chaos cluster cluster-stop \
	chaos-cluster

# The main job: show the system working end to end, then keep the workers running.
run: $(INSTALLED) rabbitmq
	$(BIN)/conveyor demo --orders 200
	$(BIN)/conveyor run

demo: $(INSTALLED) rabbitmq
	$(BIN)/conveyor demo --orders $(or $(ORDERS),1000)

# The tests include a smoke run of the benchmark harness (and mypy checks it): they need
# the bench extra too.
# Two pytest-xdist workers: the suite mostly waits on the broker and on worker processes,
# so two run it in a bit more than half the time. More would not help on 2 cores and would
# multiply the connections and quorum queues on a broker with 1024 file handles. The
# tests marked `exclusive` restart the shared broker: they run alone, afterwards.
TEST_WORKERS ?= 2
test: $(INSTALLED_BENCH) rabbitmq lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not exclusive"
	$(BIN)/python -m pytest -m exclusive

lint: $(INSTALLED_BENCH)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/actionlint -shellcheck=$(BIN)/shellcheck -pyflakes= .github/workflows/ci.yml

# Performance figures, each against a reference measured in the same run; results in
# bench/results/<UTC timestamp>.json and .png. Options: BENCH_ARGS="--quick --repeat 1".
bench: $(INSTALLED_BENCH) rabbitmq
	$(BIN)/python -m bench $(BENCH_ARGS)

# Fault injection under load: lost / duplicated effects per scenario, results in
# chaos/results/<UTC timestamp>.json. Scenario 4 restarts the local RabbitMQ (stop_app/start_app).
# Options: CHAOS_ARGS="--scenarios 1,2,3 --quick --commands 2000".
chaos: $(INSTALLED) rabbitmq
	$(BIN)/python -m chaos $(CHAOS_ARGS)

# A local 3-node RabbitMQ cluster from the installed rabbitmq-server (scripts/cluster.sh; run
# as root or as user rabbitmq), AMQP on 5791-5793; the broker on 5672 is not touched.
cluster:
	./scripts/cluster.sh start

cluster-stop:
	./scripts/cluster.sh stop

# The cluster scenarios (14-16: node SIGKILL, rolling restart, stop_app under the gateway)
# on a cluster started for the run and stopped after it. Options as for chaos.
chaos-cluster: $(INSTALLED)
	./scripts/cluster.sh start
	$(BIN)/python -m chaos --scenarios 14,15,16 $(CHAOS_ARGS); status=$$?; \
	./scripts/cluster.sh stop; exit $$status

install: $(INSTALLED)

check-python:
	@test -n "$(PYTHON)" || { echo "conveyor needs Python >= 3.11 (python3.11+ on PATH)" >&2; exit 1; }

$(INSTALLED): pyproject.toml | check-python
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# One pip run for the tests' set-up, not two: it is on every clean clone's critical path.
$(INSTALLED_BENCH): pyproject.toml | check-python
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(INSTALLED) $@

rabbitmq:
	./scripts/ensure-rabbitmq.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info
