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
# The suite starts ~300 Python processes (jobs, workers, launchers) that import flame's modules:
# with bytecode caching off (PYTHONDONTWRITEBYTECODE, as many container images set it) each
# compiled them again (~0.05 s of CPU a process) and each xdist worker rewrote every test
# module's asserts again; cached, the first process to import a module compiles it.
unset PYTHONDONTWRITEBYTECODE
# Four workers on two cores: the waits (on SLURM, on local workers, on signals) of some files
# overlap the others' CPU, which keeps both cores ~95% busy. Measured on the 2-core machine
# (2026-12-07): 4 workers 296-305 s in place, then (torch in one worker, tests/conftest.py)
# 229-298 s in place and 230-290 s from a fresh clone (five runs); 3 workers 290-316 s in
# place (12% less CPU, the waits overlap less), 2 workers 395 s. --dist loadfile keeps a file's
# module fixtures in one worker (tests/conftest.py hands the files that import torch to one
# worker);
# --no-loadscope-reorder keeps tests/conftest.py's longest-first order (xdist would hand out
# the files with the most tests first, and a long file with few tests would end the run alone).
.venv/bin/python -m pytest -m "not slow" -n "${FLAME_TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder "$@"
