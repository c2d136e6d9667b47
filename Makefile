# Two commands do everything on a fresh clone:
#   make run    the local stack (Redis, web, worker, beat)
#   make test   the whole test suite
# Both create .venv and install what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/.installed: requirements.txt app/requirements.txt app/constraints.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

redis-server:
	@scripts/ensure-redis

run: $(BIN)/.installed redis-server
	$(BIN)/python -m devtools.stack

test: $(BIN)/.installed redis-server
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(BIN)/.installed redis-server
	$(BIN)/python -m bench.worker_budget

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
