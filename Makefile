# Two commands do all set-up on a fresh machine with Python 3.11+ and pip:
#   make serve   run windshift-grpc on an embedded NATS (creates .venv first)
#   make test    ruff, mypy --strict and the whole test suite (creates .venv first)
# Every package comes at the version uv.lock names; `make lock` updates the lock
# after a change to pyproject.toml (CI fails while the lock is stale).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# uv itself, pinned, in a small bootstrap environment of its own (uv sync
# makes .venv exactly the lock, which would remove a uv installed there).
UV_VERSION = 0.13.9
UV_HOME = .uv
UV = $(UV_HOME)/bin/uv
export UV_PROJECT_ENVIRONMENT = $(VENV)
export UV_PYTHON_DOWNLOADS = never

.PHONY: serve test test-quick lint lock bench proto clean browser

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# windshift/__init__.py holds the version: a change reinstalls the project's metadata.
$(BIN)/.installed: pyproject.toml uv.lock windshift/__init__.py $(UV)
	$(UV) sync --locked --all-extras --python $(PYTHON) --quiet
	touch $@

serve: $(BIN)/.installed
	$(BIN)/windshift-grpc serve

lint: $(BIN)/.installed
	$(UV) lock --check --quiet
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy windshift windshift_grpc tests examples benchmarks

# The console's browser tests drive Debian's Chromium (tests/grpc/test_console.py);
# as root without one, install it (CI: a fresh Debian machine). Otherwise those
# tests skip with a message naming what is missing.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the console's browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "no chromium, and not root: the console's browser tests will skip"; \
	fi

# The suite in two parts: the tests that are not marked slow, spread over one
# pytest-xdist worker per core (most of their time is spent waiting on servers
# and subprocesses), then the fault scenarios (tests/faults, marked slow) in
# one process, alone on the machine, as their timings are part of what they
# assert.
TEST_WORKERS ?= auto

test: lint browser
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow"
	$(BIN)/pytest -q -m slow

# The quick loop: everything but the fault scenarios.
test-quick: $(BIN)/.installed browser
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow"

lock: $(UV)
	$(UV) lock

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(UV_HOME) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
