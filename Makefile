# Two commands do everything on a fresh clone:
#   make run [STACK=seed]   the local stack (Redis, web, worker, beat) of Pulumi.<stack>.yaml,
#                           or of an example app's examples/<stack>/Pulumi.<stack>.yaml
#   make test   the whole test suite
# Both create .venv and install what they need first. And:
#   make test-unit   the unit tier only (no root, no Redis, no network), as an unprivileged
#                    user; CONTRIBUTING.md has the tiers
#   make plan [STACK=prod]   the offline plan of Pulumi.<stack>.yaml (or of an example's, as
#                            run): resources, validation against AWS's rules, diagram
#                            (.plan/<stack>.png), monthly cost
#   make docs   writes the docs' generated pages, then builds the site into site/
#   make wheel  the runtime package's wheel (celery_ecs), in dist/

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK ?= dev

.PHONY: run test test-unit lint bench bench-plan plan plan-docs docs wheel clean system-packages

$(BIN)/.installed: requirements.txt app/requirements.txt app/constraints.txt requirements-dev.txt \
		policy/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

system-packages:
	@scripts/ensure-system-packages

run: $(BIN)/.installed system-packages
	$(BIN)/python -m devtools.local_stack --stack $(STACK)

# With Python's bytecode cache on, whatever the shell says (some images set
# PYTHONDONTWRITEBYTECODE=1): without it each of the suite's processes, and each process a test
# starts from the tree, compiles the project's modules again (docs/how-to/run-tests.md).
test: $(BIN)/.installed system-packages
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/mkdocs build --strict --quiet
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

# The unit tier, never as root (scripts/test-unit drops to nobody), writing nothing into the tree.
test-unit: $(BIN)/.installed system-packages
	scripts/test-unit $(BIN)/python

bench: $(BIN)/.installed system-packages
	$(BIN)/python -m bench.worker_budget $(if $(BASELINE),--baseline $(BASELINE))
	$(BIN)/python -m bench.metrics_cost
	$(BIN)/python -m bench.scaling_sim
	$(BIN)/python -m bench.task_sizes
	$(BIN)/python -m bench.broker_figures
	$(BIN)/python -m bench.liveness_timeouts

bench-plan: $(BIN)/.installed system-packages
	$(BIN)/python -m bench.plan_timing

plan: $(BIN)/.installed system-packages
	@$(BIN)/python -m devtools.plan --stack $(STACK)

# The diagram (docs/plan-dev.png) and the docs' cost table, from Pulumi.dev.yaml.
plan-docs: $(BIN)/.installed system-packages
	@$(BIN)/python -m devtools.plan --stack dev --write-docs >/dev/null

# The docs' generated pages (devtools/docs.py: cost, outputs, upstream exclusions, the
# diagram), then the site, strict: a broken link or a page missing from the nav fails.
docs: $(BIN)/.installed system-packages
	$(BIN)/python -m devtools.docs
	$(BIN)/mkdocs build --strict

# The runtime's wheel, built as any user builds it (python -m build; its backend fetched by pip).
wheel: $(BIN)/.installed
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) .venvs .twin .plan .pytest_cache .ruff_cache .mypy_cache .hypothesis site dist
