#!/usr/bin/env bash
# Create .venv (if missing) and install the worker with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Intel Neural Compressor's TensorFlow part makes the sample int8 model (sample-models) and
# the tests' int8 graphs. Its metadata asks for the 'tensorflow' wheel, which would install a
# second copy of TensorFlow over tensorflow-cpu: it goes in without dependencies, and its own
# small ones (prettytable, py-cpuinfo) come with the 'inc' extra.
INC_REQUIREMENT=neural-compressor-tf==3.10
# Reinstall only when pyproject.toml or this script changed since the last install.
stamp=.venv/.installed-$(cat pyproject.toml ops/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test,inc]'
  .venv/bin/python -m pip install --quiet --no-deps "$INC_REQUIREMENT"
  rm -f .venv/.installed-* && touch "$stamp"
fi
# The other-language checks (ops/node: ajv, @asyncapi/parser, amqplib), pinned by its lock
# file; tests/integration/test_node_clients.py runs them and says so if Node is missing.
if command -v npm >/dev/null && [ ! -f ops/node/node_modules/.installed-"$(sha256sum ops/node/package-lock.json | cut -c1-16)" ]; then
  (cd ops/node && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
  touch ops/node/node_modules/.installed-"$(sha256sum ops/node/package-lock.json | cut -c1-16)"
fi
# A real headless browser for tests/browser: Debian's chromium and its chromedriver (no browser
# download of its own). Without apt-get or root this only warns, and the browser tests then fail
# saying how to install them.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo -n"; fi
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    apt_install() {
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
        >/dev/null
    }
    # a stale or empty package list first gets an update, then one more try
    apt_install 2>/dev/null || { $SUDO apt-get update -qq >/dev/null && apt_install; } \
      || echo "setup: could not install chromium chromium-driver; tests/browser will fail" >&2
  else
    echo "setup: no apt-get (as root): install chromium and chromium-driver for tests/browser" >&2
  fi
fi
