# The two commands of the README:
#   make demo   runs the main job on a local broker it starts itself
#   make test   installs everything and runs the whole test suite against a real broker
#               (and Debian's chromium for the web console's browser tests)
# Both work inside the project's own virtual environment (.venv, created on first use) and
# install the exact versions in constraints.txt, so nothing else on the machine takes part.
# `make lock` refreshes constraints.txt from what pyproject.toml allows today.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
.PHONY: install test test-cluster demo lint lock soak

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip

install: $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PY) -c "from streamtask.broker import kafka_classpath; print('kafka jars:', kafka_classpath())"

lint: install
	$(BIN)/ruff check streamtask tests benchmarks
	$(BIN)/mypy
	bash .ci/compose-check

test: lint
	bash .ci/install-promtool
	bash .ci/chromium
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m pytest -q

# The long chaos runs (100,000 tasks, 20 kill -9s and a broker outage, at-least-once and
# exactly-once); their figures go in benchmarks/reliability.md.
soak: install
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m pytest -q -s -m soak tests/test_chaos_pipeline.py

# Broker failover on a local 3-broker cluster (three JVMs, a few minutes): not in `make test`.
test-cluster: install
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m pytest -q -m cluster tests/test_cluster_failover.py

demo: install
	$(BIN)/streamtask demo $(DEMO_ARGS)

# A fresh environment from pyproject.toml alone, frozen: run it when a dependency changes,
# then `make test` and commit constraints.txt with the change.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	.lock-venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	( echo "# Exact versions the test suite passed with; refresh with \`make lock\`."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable --all | grep -vE '^(pip|setuptools|wheel)==' ) > constraints.txt
	rm -rf .lock-venv
