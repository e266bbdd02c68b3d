#!/usr/bin/env bash
# Run the test suite in a venv of its own (.venv), installing ipwhl and its test extras first.
set -euo pipefail
cd "$(dirname -- "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --isolated --disable-pip-version-check --upgrade "pip>=24"
PIP_CONFIG_FILE=/dev/null .venv/bin/python -m pip install --quiet --isolated \
  --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check ipwhl tests bench
exec .venv/bin/python -m pytest "$@"
