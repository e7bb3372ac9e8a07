#!/usr/bin/env bash
# Set up everything hafen needs, then run the control plane (pass --detach to return).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/hafen up "$@"
