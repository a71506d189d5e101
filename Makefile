# The two quick-start commands: `make demo` runs the pipeline end to end, `make test` runs every check.
# Both create .venv and install what they need on first use (and again when pyproject.toml changes): the demo
# only the runtime (msgrelay and the bundled redis-server), the checks the development toolchain too.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime

.PHONY: demo test lint typecheck unit system-deps chaos bench bench-smoke bench-venvs clean venv-base

demo: $(RUNTIME_STAMP)
	$(BIN)/msgrelay demo

test: lint typecheck system-deps unit

# The real tools some tests drive (logrotate ...), from Debian's packages: .ci/debian-packages.txt.
system-deps:
	@.ci/system-deps

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
# and the peers (their virtualenvs are built first by `make bench-venvs`). Writes docs/benchmarks.md,
# .json and .png. `make bench-smoke` runs every scenario at toy sizes in seconds (CI runs it as a test).
bench: $(STAMP) bench-venvs
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke --skip-peers --out .msgrelay/bench-smoke/benchmarks.md

# The development install holds the runtime one, so it stamps both.
$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory venv-base
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml
	@$(MAKE) --no-print-directory venv-base
	$(BIN)/python -m pip install --quiet -e '.[server]'
	@touch $@

venv-base:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "msgrelay needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ echo "cannot create a virtualenv: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

# The peers of the benchmark (Celery, Dramatiq, Huey, RQ; arq apart, it needs redis-py < 6) in their own
# virtualenvs, never in the project's: see bench/peers/README.md. Reinstalled when a requirements file changes.
BENCH_VENVS := bench/.venvs

bench-venvs: $(BENCH_VENVS)/peers/.installed $(BENCH_VENVS)/arq/.installed

$(BENCH_VENVS)/%/.installed: bench/peers/requirements-%.txt
	@test -x $(BENCH_VENVS)/$*/bin/python || $(PYTHON) -m venv $(BENCH_VENVS)/$* || \
		{ echo "cannot create a virtualenv: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(BENCH_VENVS)/$*/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENVS)/$*/bin/python -m pip install --quiet -r $<
	$(BENCH_VENVS)/$*/bin/python -m pip freeze > $(BENCH_VENVS)/$*/versions.txt
	@touch $@

clean:
	rm -rf $(VENV) $(BENCH_VENVS) .msgrelay .mypy_cache .ruff_cache .pytest_cache
