#!/usr/bin/env bash
# The main job on a fresh machine: installs what it needs, then runs `itsmctl demo`
# (Kafka, topics, development ITSM, worker, sink, gateway, bundled sample alerts).
# Ctrl-C stops everything cleanly. Usage: bash ops/demo.sh [--once] [--samples DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/bootstrap.sh
exec "${ITSM_VENV:-.venv}/bin/itsmctl" demo "$@"
