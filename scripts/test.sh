#!/usr/bin/env bash
# Set up, then run every test tier: lint, unit (fake engine), integration (real
# swarm, demo app), end to end (real OpenSlides through the edge, Chromium) and
# multinode (a swarm of three nodes simulated on this machine, root only).
# Pass pytest arguments to narrow it down, e.g. the unit tier:
# scripts/test.sh -m "not integration and not e2e and not multinode".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
export PATH="$PWD/.venv/bin:$PATH"

echo "==> lint: ruff and mypy" >&2
ruff check .
mypy hafen
lint-imports

echo "==> images (only those whose build files changed)" >&2
hafen images build --stale

echo "==> tests" >&2
exec pytest "$@"
