# The README's commands. Each installs what it needs into .venv (from this project's own files) first.
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/fly64_data/dagster_home

.PHONY: study test ui install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

study: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/fly64 study

# ptychodus 1.7.0 alone (--no-deps), in a folder of its own beside the venv's packages, not among them (its own
# dependencies would pull in some 75 packages): the interop tests read our products with its readers
# (fly64_assets_tests/test_ptychodus_product.py).
PTYCHODUS_SITE := $(VENV)/ptychodus-1.7.0

$(PTYCHODUS_SITE)/.installed: $(VENV)/.installed
	rm -rf $(PTYCHODUS_SITE)
	$(BIN)/pip install -q --no-deps --target $(PTYCHODUS_SITE) ptychodus==1.7.0
	touch $@

# Two pytest-xdist workers: the server and daemon tests spend most of their time waiting on Dagster's daemon loops,
# so two at once fit a 2-core machine; each module runs whole in one worker (fly64_assets_tests/conftest.py).
PYTEST_WORKERS ?= 2

test: install $(PTYCHODUS_SITE)/.installed
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# One warm dask cluster (127.0.0.1 only) and dagster dev beside it, every run's partitions on its workers; Ctrl-C
# stops both (fly64_assets/cli.py: cmd_ui, docs/CLUSTER.md).
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/fly64 ui --port 3000
