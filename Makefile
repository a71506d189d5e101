# The two quick-start commands: `make demo` runs the pipeline end to end, `make test` runs every check.
# Both create .venv and install what they need on first use (and again when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit chaos bench bench-smoke clean

demo: $(STAMP)
	$(BIN)/msgrelay demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

# The chaos suite at full size (1M messages, 20 kills); prints the figures and writes docs/reliability.md.
# `make test` runs the same scenarios at CI size.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --full

# The benchmark of issue 4 at full size (tens of minutes): msgrelay in every mode, the plain redis-py loops
# and the peers (run `make bench-venvs` first, or they are reported as not run). Writes docs/benchmarks.md,
# .json and .png. `make bench-smoke` runs every scenario at toy sizes in seconds (CI runs it as a test).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke --skip-peers --out .msgrelay/bench-smoke/benchmarks.md

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "msgrelay needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ echo "cannot create a virtualenv: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

clean:
	rm -rf $(VENV) .msgrelay .mypy_cache .ruff_cache .pytest_cache
