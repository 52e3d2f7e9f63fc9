#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (venv, Kafka jars,
# Debian's docker-compose, prometheus-alertmanager, prometheus, chromium and Request Tracker 5), then
# lint, types, pytest.
# The test session starts and stops its own Kafka broker on free loopback ports.
# Usage: bash ops/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/bootstrap.sh
# Debian packages the tests need: docker-compose (checks docker-compose.yml),
# prometheus-alertmanager (the real Alertmanager of the end-to-end test), and Request Tracker 5
# with SQLite and its standalone server (the real ITSM the RT sink is proven against); prometheus
# (promtool tests the alert rules; a real Prometheus scrapes the pipeline) and chromium with its
# driver (the status page in a headless browser).
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
[ -x /usr/share/request-tracker5/libexec/rt-server ] || need+=(request-tracker5 rt5-db-sqlite rt5-standalone)
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
# Test files run in ITSM_TEST_PROCESSES pytest processes (pytest-xdist, default 2: most tests wait
# on brokers, ITSMs and stacks rather than compute); each process starts its own session broker
# and RT, and a file's tests stay in one process. ITSM_TEST_PROCESSES=0 runs them in this one.
echo "test: pytest"
# The slowest tests are listed at the end, to keep the suite's time in view.
exec "$VENV/bin/pytest" -n "${ITSM_TEST_PROCESSES:-2}" --dist loadfile --durations=15 "$@"
