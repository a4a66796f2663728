#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md) with the machine's python3; every argument goes to gpu_check.py.
set -euo pipefail
exec python3 "$(dirname "$0")/gpu_check.py" "$@"
