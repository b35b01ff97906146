#!/usr/bin/env bash
# Set up (idempotently) and run the main job. Extra arguments go to the job.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m worldenv demo "$@"
