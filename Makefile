# The two commands of the README:
#   make demo   runs the main job on a local broker it starts itself
#   make test   installs everything and runs the whole test suite against a real broker
PYTHON ?= python3
.PHONY: install test demo lint

install:
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(PYTHON) -c "from streamtask.broker import kafka_classpath; print('kafka jars:', kafka_classpath())"

lint: install
	ruff check streamtask tests benchmarks
	mypy
	bash .ci/compose-check

test: lint
	$(PYTHON) -m pytest -q

demo: install
	streamtask demo
