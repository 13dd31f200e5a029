# CreditCraft — every entry point a developer, CI or an operator needs.
# `make run` and `make test` are the two commands; `make help` lists the rest.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FLASK  := $(BIN)/flask --app app:create_app

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast worker bench lint fmt backup restore-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the app with its dev tools

run: $(STAMP) ## serve the app on http://127.0.0.1:8000 (SQLite under instance/, jobs inline, demo shop)
	mkdir -p instance
	CREDITCRAFT_ENV=development $(FLASK) db upgrade
	CREDITCRAFT_ENV=development $(FLASK) demo seed
	@echo "CreditCraft's pages: open http://127.0.0.1:8000/app/dev/login (the demo shop, signed in as dev-staff)"
	CREDITCRAFT_ENV=development $(FLASK) run --host 127.0.0.1 --port 8000

test: $(STAMP) lint ## lint, then the whole suite on throwaway PostgreSQL + Redis (installed through apt-get if missing)
	scripts/with-services.sh scripts/run-tests.sh $(PYTEST_ARGS)

worker: $(STAMP) ## an RQ worker (with the periodic schedule) against REDIS_URL
	$(FLASK) worker --schedule

bench: $(STAMP) ## every benchmark under bench/ (B=name runs one), on throwaway PostgreSQL + Redis
	scripts/with-services.sh scripts/run-bench.sh $(B)

backup: ## pg_dump DATABASE_URL into BACKUP_DIR (default backups/), keeping the newest BACKUP_KEEP (14)
	scripts/backup.sh

restore-check: $(STAMP) ## restore FILE=<dump> into a scratch database; check migrations, every chain and the totals
	scripts/restore-check.sh "$(FILE)"

lint: $(STAMP) ## ruff check + ruff format --check + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

fmt: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
