#!/usr/bin/env bash
# Install the zoo into ./.venv (idempotent), and on Debian/Ubuntu the real
# Fashion-MNIST files (package dataset-fashion-mnist) for offline machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,deploy]"
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${ZOO_MANUAL_DIR:-}" ] && command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } \
        || echo "Could not install dataset-fashion-mnist: Fashion-MNIST will be downloaded by tensorflow-datasets." >&2
fi
