#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (venv, Kafka jars,
# Debian's docker-compose for the compose-file check), then lint, types and pytest.
# The test session starts and stops its own Kafka broker on free loopback ports.
# Usage: bash ops/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/bootstrap.sh
if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "test: installing Debian's docker-compose (for the compose-file check)"
    (apt-get install -y -q docker-compose >/dev/null 2>&1) || \
      (apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null)
  else
    echo "test: docker-compose missing and not root; the compose check will fail" >&2
  fi
fi
VENV=${ITSM_VENV:-.venv}
echo "test: ruff"
"$VENV/bin/ruff" check streams connectors ops tests bench
echo "test: mypy"
"$VENV/bin/mypy"
echo "test: pytest"
exec "$VENV/bin/pytest" "$@"
