# The Python client (remotemedia-client): its linters. Its tests are tests/client_api.py and
# tests/test_client*.py, run with the rest of the pytest suite by `make test-python`.
# Included by the main Makefile; every path here is relative to the repository root.

PY_CLIENT_DIR := clients/python
# As seen from $(PY_CLIENT_DIR), whose pyproject.toml configures ruff and mypy for them too.
PY_CLIENT_TESTS := $(addprefix ../../,tests/client_api.py $(wildcard tests/test_client*.py))

.PHONY: lint-python-client

lint-python-client: venv ## ruff (check and format) and mypy --strict over the Python client, its examples and tests
	cd $(PY_CLIENT_DIR) && $(VPY) -m ruff check . $(PY_CLIENT_TESTS)
	cd $(PY_CLIENT_DIR) && $(VPY) -m ruff format --check . $(PY_CLIENT_TESTS)
	cd $(PY_CLIENT_DIR) && MYPYPATH=../../tests $(VPY) -m mypy --strict src/remotemedia_client examples $(PY_CLIENT_TESTS)

CLIENT_LINT_TARGETS += lint-python-client
