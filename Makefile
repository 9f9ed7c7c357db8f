# The two commands a fresh machine needs (Python 3.11+ and this repo): `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint types pytest bench clean chromium promtool

# Tools the suite needs from Debian's packages. CI runs as root on Debian, so `make pytest`
# installs each one when missing (the demo needs none); where it cannot, it says so and the tests
# that need it fail (never skip). $(call debian_tool,PATH,PACKAGE,WHAT NEEDS IT)
define debian_tool
	@if [ ! -x "$(1)" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(2) \
			|| echo "make: installing $(2) with apt-get failed; $(3) will fail" >&2; \
		else \
			echo "make: $(1) is missing and apt-get (as root) is not available to install it:" \
				"install Debian's $(2) package, or $(3) will fail" >&2; \
		fi; \
	fi
endef

# The dashboard's browser test drives Debian's chromium through Playwright (never Playwright's own
# browser downloads).
CHROMIUM ?= /usr/bin/chromium

chromium:
	$(call debian_tool,$(CHROMIUM),chromium,the dashboard test (tests/test_dashboard.py))

# The alert rules under deploy/prometheus are checked with promtool, from Debian's prometheus
# package.
PROMTOOL ?= /usr/bin/promtool

promtool:
	$(call debian_tool,$(PROMTOOL),prometheus,the alert rule tests (tests/test_monitoring.py))

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("taskwarden needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# two platform SDKs for the fidelity tests pin what the project cannot have (see the test
	# extra): the last Descartes Labs SDK with vector jobs wants a numpy that Python 3.11 cannot
	# build, UP42's wants an older packaging than kombu; both run fine on today's versions
	$(BIN)/python -m pip install --quiet --no-deps "descarteslabs==1.12.1" "up42-py==4.3.0"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/taskwarden demo

# everything CI checks: lint, types, the whole test suite
test: lint types pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

types: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed chromium promtool
	# two processes, a test module each: most of the suite waits on real workers and servers
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(BIN)/.installed
	$(BIN)/python bench/polls.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
