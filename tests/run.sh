#!/usr/bin/env bash
# The default test suite, against a real single-node SLURM on loopback (`flame cluster up`).
# Extra arguments go to pytest. A cluster that was already up is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
flame=.venv/bin/flame
if $flame cluster status >/dev/null 2>&1; then
  started=0
else
  $flame cluster up
  started=1
fi
cleanup() { [[ $started == 1 ]] && $flame cluster down >/dev/null 2>&1 || true; }
trap cleanup EXIT
eval "$($flame cluster env)"
export OPENBLAS_NUM_THREADS=1  # see jobs/cli.py: BLAS threads slow small fits on 2 cores
.venv/bin/python -m pytest -m "not slow" "$@"
