#!/usr/bin/env bash
# Set up, then run every test tier: lint, unit (fake engine), integration (real
# swarm, demo app), end to end (real OpenSlides through the edge, Chromium) and
# multinode (a swarm of three nodes simulated on this machine, root only).
# Pass pytest arguments to narrow it down, e.g. the unit tier:
# scripts/test.sh -m "not integration and not e2e and not multinode".
# The unit tests among those selected run twice: on SQLite, then on a throw-away PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
export PATH="$PWD/.venv/bin:$PATH"

echo "==> lint: ruff and mypy" >&2
ruff check .
mypy hafen
lint-imports

echo "==> images (only those whose build files changed)" >&2
# with the tests' catalogue: the demo app's builds broken on purpose (tests/catalog)
HAFEN_CATALOG_EXTRA=tests/catalog hafen images build --stale

echo "==> tests" >&2
status=0
pytest "$@" || status=$?

# The unit tests among those selected, again, with the control plane's database on a throw-away
# PostgreSQL server (tests/pgserver.py, started and removed by tests/unit/conftest.py); the other tiers
# are deselected there (tests/conftest.py). Exit 5: no unit test was selected, nothing to run again.
echo "==> unit tests again, on PostgreSQL" >&2
again=0
HAFEN_TEST_DATABASE=postgresql pytest -p no:cacheprovider "$@" || again=$?
[ $again -eq 5 ] && again=0
[ $status -ne 0 ] && exit $status
exit $again
