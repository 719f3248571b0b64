# callscribe: `make run` serves on http://localhost:5001, `make test` runs lint and the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null)
PORT ?= 5001

.PHONY: setup serving try run test lint format simulate demo docs bench clean

# `make setup` installs everything (the service, and the tools to test, lint and benchmark it); `make run`, `demo`,
# `simulate` and `docs` only what serving needs, so a first run fetches no test tools (Playwright, moto, mypy).
setup: $(VENV)/.synced
serving: $(VENV)/.serving

# uv builds .venv from uv.lock exactly; pip installs uv first on a machine that has only Python. The serving half
# syncs --inexact, so after a `make setup` it keeps the tools it does not need instead of removing them.
# Bytecode is compiled once here (the packages', then the service's own): where Python may not write it
# (PYTHONDONTWRITEBYTECODE, a read-only image) every start would otherwise compile ~1,000 modules, 2.35 s of CPU
# against 0.82 s (docs/benchmarks.md, start-up).
ifeq ($(UV),)
UV_SYNC = $(PYTHON) -m pip install --quiet --user uv || $(PYTHON) -m pip install --quiet --break-system-packages uv || $(PYTHON) -m pip install --quiet uv; $(PYTHON) -m uv sync --frozen --compile-bytecode --python $(PYTHON)
else
UV_SYNC = $(UV) sync --frozen --compile-bytecode --python $(PYTHON)
endif
COMPILE_SERVICE = $(BIN)/python -m compileall -q service

$(VENV)/.synced: pyproject.toml uv.lock
	$(UV_SYNC)
	$(COMPILE_SERVICE)
	touch $@ $(VENV)/.serving

$(VENV)/.serving: pyproject.toml uv.lock
	$(UV_SYNC) --no-dev --inexact
	$(COMPILE_SERVICE)
	touch $@

# No account, no .env: the Deepgram stand-in and the service on local ports, one demo call and its transcript, the
# page's address and a password made for the run; Ctrl+C stops both. ARGS passes options, e.g. ARGS="--standin-port 5012".
try: serving
	$(BIN)/python -m service try --port $(PORT) $(ARGS)

# The default database is a SQLite file here, which the service creates and migrates itself as it starts.
run: serving
	$(BIN)/python -m service serve --port $(PORT)

lint: setup
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/ruff format --check service tests benchmarks
	$(BIN)/mypy --strict service
	$(BIN)/mypy --strict benchmarks
	$(BIN)/lint-imports --no-cache

# --cov measures only the pure modules (the `pure` import contract's list in pyproject.toml) and fails under
# [tool.coverage.report] fail_under.
test: setup lint
	$(BIN)/pytest $$($(BIN)/python -m tests.helpers.architecture) --cov-report=term-missing:skip-covered

format: setup
	$(BIN)/ruff format service tests benchmarks
	$(BIN)/ruff check --fix service tests benchmarks

simulate: serving
	$(BIN)/python -m service simulate service/simulator/samples/hello.wav --url http://localhost:$(PORT)

# One simulated call to the service `make run` started, and its transcript printed (or what to fix).
demo: serving
	$(BIN)/python -m service demo --url http://localhost:$(PORT)

# The configuration reference, .env.example and app.json's env, rendered from service/settings.py (a test checks
# they match); app.json's other parts are kept.
docs: serving
	$(BIN)/python -m service settings --markdown > docs/configuration.md
	$(BIN)/python -m service settings --env > .env.example
	$(BIN)/python -m service settings --app-json > app.json.new && mv app.json.new app.json

# The benchmark harness (benchmarks/run.py): N calls through a fresh service; writes docs/benchmarks.{json,md}.
# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--quick" or "--env AUDIO_BATCH_MS=100 --label batch100".
bench: setup
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage
