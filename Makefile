# Two entry points for a fresh machine (see README.md): `make sweep` and `make test`.
# Both create .venv on first use; `make test` also installs and boots the emulated Slurm cluster.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODES ?= 3
PYTEST_ARGS ?=

.PHONY: setup sweep test faults-doc cluster-up cluster-down clean-results

$(BIN)/hpc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/hpc

setup: $(BIN)/hpc

# The default sweep (workflow/sweeps/default.yaml), locally on the CPU.
sweep: setup
	$(BIN)/snakemake --profile profiles/local

cluster-up: setup
	$(BIN)/hpc cluster up --nodes $(NODES)

cluster-down: setup
	$(BIN)/hpc cluster down

# Every test, the slow end-to-end ones on the emulated Slurm cluster included.
test: cluster-up
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every test, and docs/faults.md rewritten from the outcomes of the tests marked `fault`.
faults-doc: cluster-up
	$(BIN)/python -m pytest --faults-doc=docs/faults.md $(PYTEST_ARGS)

clean-results:
	rm -rf results .snakemake
