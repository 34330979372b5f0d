# The README's two commands are `make demo` and `make test`; each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-faults lint unit integration bench infra-up infra-down infra-status system-deps clean

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

# Java and Maven assemble and run Kafka; redis-server and chromium (the dashboard test's
# headless browser) come from Debian's packages.
system-deps:
	@command -v java >/dev/null || { echo "java not found: install OpenJDK 17 (apt-get install -y openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven (apt-get install -y maven)" >&2; exit 1; }
	@command -v redis-server >/dev/null || deploy/install-redis.sh
	@command -v chromium >/dev/null || deploy/install-chromium.sh

demo: $(INSTALLED) system-deps
	$(BIN)/headrace demo

test: lint system-deps
	$(BIN)/python -m pytest

# The fault and scale tests alone (worker SIGKILLed, broker restarted, second worker joining,
# hostile input, a 15-minute soak; HEADRACE_SOAK_S shortens the soak): about 25 minutes.
# `make test` runs them too, after the unit and integration tests.
test-faults: $(INSTALLED) system-deps
	$(BIN)/python -m pytest tests/faults

unit: $(INSTALLED)
	$(BIN)/python -m pytest tests/unit

integration: $(INSTALLED) system-deps
	$(BIN)/python -m pytest tests/integration

lint: $(INSTALLED)
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/mypy .

bench: $(INSTALLED) system-deps
	$(BIN)/headrace bench validate --json

infra-up: $(INSTALLED) system-deps
	$(BIN)/headrace infra up

infra-down: $(INSTALLED)
	$(BIN)/headrace infra down

infra-status: $(INSTALLED)
	$(BIN)/headrace infra status

clean: infra-down
	rm -rf .headrace test-artifacts
