# atpd — every target sets up what it needs; `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/atpd/v1/*.proto)
GEN    := src/atpd/v1/.generated
ARGS   ?=
# A test tier to run alone (core, grpc or durable: tests/conftest.py); empty runs them all.
MARK   ?=

.PHONY: setup fuse run test test-core lint format proto bench crashtest clean

setup: $(STAMP) $(GEN)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Generated protobuf/gRPC code lives in src/atpd/v1 (git-ignored), mirroring the proto package.
$(GEN): $(PROTOS) $(STAMP)
	rm -rf src/atpd/v1 && mkdir -p src/atpd/v1
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src \
		--grpc_python_out=src $(PROTOS)
	touch src/atpd/v1/__init__.py $@

proto: $(STAMP)
	rm -f $(GEN) && $(MAKE) $(GEN)

run: setup
	$(BIN)/atpd serve --demo $(ARGS)

# The power-cut tests (tests/powercut) mount a FUSE filesystem: Debian's fuse3 brings libfuse3
# (which mfusepy loads) and fusermount3.
fuse:
	@command -v fusermount3 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null)

# Slow tests (the crash soak, `make crashtest`) stay out whatever the tier.
test: setup fuse
	$(BIN)/pytest -m "$(if $(MARK),($(MARK)) and )not slow" $(ARGS)

# The pure-core tier alone: no server, no files, no subprocess.
test-core:
	$(MAKE) test MARK=core

lint: setup
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Benchmarks are not tests: they print JSON lines and update bench/RESULTS.md. The race against
# Redis + Lua (bench/suites/race.py) needs Debian's redis-server and redis-tools.
bench: setup
	@command -v h2load >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null) || echo "h2load unavailable: using the Python load generator"
	@command -v redis-benchmark >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null) || echo "redis-server unavailable: the race against Redis is skipped"
	$(BIN)/python -m bench.run $(ARGS)

crashtest: setup fuse
	$(BIN)/pytest -m slow tests/persistence tests/powercut tests/cluster $(ARGS)

clean:
	rm -rf $(VENV) src/atpd/v1 .pytest_cache .mypy_cache .ruff_cache
