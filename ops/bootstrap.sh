#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine: the Python venv with the
# project and its dev extras, and the Kafka broker jars (cached outside the repo).
# Idempotent: a second run only checks. Usage: bash ops/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ITSM_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating venv in $VENV"
  "$PY" -m venv "$VENV"
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp="$VENV/.itsm-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing itsm-pipeline[dev] into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
# Kafka jars from Maven Central, into ~/.cache/itsm-pipeline (reused across clones).
"$VENV/bin/itsmctl" kafka fetch
