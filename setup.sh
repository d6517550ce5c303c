#!/usr/bin/env bash
# Set up a fresh machine and run the system (Linux / macOS). Needs only Python 3.11.
#
#   ./setup.sh          create .venv, install requirements.txt, run the main job
#   ./setup.sh test     create .venv if missing (or stale), run the whole test suite
#
# Extra arguments after "test" go to pytest (./setup.sh test -k warehouse).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}

ensure_venv() {
  if [ -z "$PYTHON" ]; then
    echo "setup.sh: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
      echo "setup.sh: $PYTHON is $("$PYTHON" --version 2>&1); requirements.txt is pinned for Python 3.11" >&2
      exit 1
    }
    echo "[setup] creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when requirements.txt changed since the last successful install.
  local want stamp="$VENV/.requirements.sha256"
  want=$("$VENV/bin/python" -c 'import hashlib; print(hashlib.sha256(open("requirements.txt", "rb").read()).hexdigest())')
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing requirements.txt into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r requirements.txt
    echo "$want" > "$stamp"
  fi
}

ensure_venv
if [ "${1:-}" = "test" ]; then
  shift
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" mlops_pipeline/src/pipeline.py "$@"
