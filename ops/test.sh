#!/usr/bin/env bash
# Run every test: unit, real broker, real TensorFlow. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy  # strict on contracts/ and service/ (pyproject.toml)
.venv/bin/python -m pytest "$@"
