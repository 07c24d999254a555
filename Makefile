# The few commands people need. `make run` and `make test` do all set-up themselves.
.PHONY: run test up down status unit lint bench clean

VENV := .venv/bin

run: ## set up, start Kafka + registry + PostgreSQL, and run the smoke check
	@scripts/bootstrap.sh
	$(VENV)/backbone up
	@scripts/smoke.sh

test: ## set up and run the whole test suite against real Kafka, registry and PostgreSQL
	@scripts/bootstrap.sh
	$(VENV)/python -m pytest

unit: ## the fast tests only (no services)
	$(VENV)/python -m pytest tests/unit

up:
	$(VENV)/backbone up
down:
	$(VENV)/backbone down
status:
	$(VENV)/backbone status

lint:
	$(VENV)/ruff check . && $(VENV)/ruff format --check . && $(VENV)/mypy

clean: ## stop services and delete local data (topics, schemas, database)
	-$(VENV)/backbone down
	rm -rf .backbone .backbone-test

.PHONY: mutation
MUTATION_VENV := .venv-mutation
# mutmut needs click>=8.4.2 and faust (the bench extra) click<8.4, so mutation testing has a venv of its own
MUTMUT ?= $(MUTATION_VENV)/bin/mutmut
mutation: ## mutation testing of the pricing core (mutmut, settings in setup.cfg); one process, results cached in mutants/
	@test -x $(MUTMUT) || { python3.11 -m venv $(MUTATION_VENV) && $(MUTATION_VENV)/bin/pip install -q -e ".[test,mutation]"; }
	$(MUTMUT) run --max-children 1
	$(MUTMUT) results
