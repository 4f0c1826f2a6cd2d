#!/usr/bin/env bash
# Installs (once) checkov, pinned, in a virtualenv of its own under the tool cache and
# prints the path of its executable. It stays out of the project's .venv: its
# dependency pins (packaging, python-dateutil, ...) conflict with the test suite's.
set -euo pipefail

CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
CACHE=${SLMFLEET_CACHE:-$HOME/.cache/slmfleet}
VENV="$CACHE/tools/checkov-$CHECKOV_VERSION"
PYTHON=${PYTHON:-python3}

if [ ! -e "$VENV/.complete" ]; then
  echo "checkov: installing $CHECKOV_VERSION into $VENV (once)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "checkov==$CHECKOV_VERSION"
  touch "$VENV/.complete"
fi
echo "$VENV/bin/checkov"
