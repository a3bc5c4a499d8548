#!/usr/bin/env bash
# Sets up flame in ./.venv on a Debian machine (idempotent; a second run takes seconds).
#   bash install.sh          the package and its dependencies
#   bash install.sh --test   ... plus the test dependencies (and Debian's chromium: the report's
#                            browser test loads report.html headless)
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[[ ${1:-} == --test ]] && extras="[test]"

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

# Python >= 3.11 with venv and pip (Debian 12's python3 needs python3-venv for that).
if ! python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q python3 python3-venv python3-pip
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11), "flame needs Python >= 3.11"'

[[ -x .venv/bin/python ]] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and pinned: the CPU build. Anything that asks for torch later finds it installed
# instead of pulling the CUDA wheels.
.venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' \
  2>/dev/null || "${pip[@]}" torch==2.13.0
# The constraint keeps torch at the pinned build whatever a dependency (lm-eval) asks for.
"${pip[@]}" -e ".${extras}" --constraint <(echo "torch==2.13.0")
# Headless Chromium for tests/analysis/test_html_report.py (~20 s with apt's lists present).
if [[ -n $extras ]] && ! command -v chromium >/dev/null; then
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends chromium
fi
echo "flame installed: $(.venv/bin/flame --help | head -1)"
