#!/usr/bin/env bash
# `make demo` (after the install): explains the bundled photographs and
# compares NMS with Odam-NMS on the bundled crowd set. See tools/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
exec "$PYTHON" tools/demo.py "$@"
