# Two commands do everything on a fresh clone:
#   make run    the local stack (Redis, web, worker, beat)
#   make test   the whole test suite
# Both create .venv and install what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean system-packages

$(BIN)/.installed: requirements.txt app/requirements.txt app/constraints.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

system-packages:
	@scripts/ensure-system-packages

run: $(BIN)/.installed system-packages
	$(BIN)/python -m devtools.stack

test: $(BIN)/.installed system-packages
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(BIN)/.installed system-packages
	$(BIN)/python -m bench.worker_budget
	$(BIN)/python -m bench.metrics_cost
	$(BIN)/python -m bench.scaling_sim

clean:
	rm -rf $(VENV) .twin .pytest_cache .ruff_cache .hypothesis
