#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (venv, Kafka jars,
# Debian's docker-compose and prometheus-alertmanager), then lint, types and pytest.
# The test session starts and stops its own Kafka broker on free loopback ports.
# Usage: bash ops/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/bootstrap.sh
# Debian packages the tests need: docker-compose (checks docker-compose.yml) and
# prometheus-alertmanager (the real Alertmanager of the end-to-end test).
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -q "${need[@]}" >/dev/null 2>&1) || \
      (apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null)
  else
    echo "test: missing ${need[*]} and not root; the tests that need them will fail" >&2
  fi
fi
VENV=${ITSM_VENV:-.venv}
echo "test: ruff"
"$VENV/bin/ruff" check streams connectors ops tests bench
echo "test: mypy"
"$VENV/bin/mypy"
echo "test: pytest"
exec "$VENV/bin/pytest" "$@"
