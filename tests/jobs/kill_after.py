"""Test-only: run the `flame` CLI and SIGKILL it once it has recorded N ledger entries.

``python -m tests.jobs.kill_after N <flame args...>``: every rename that lands a
``runs/<run_id>/state.json`` counts (the ledger's atomic writes all end in ``os.replace``);
after the Nth the process kills itself with SIGKILL, as ``kill -9`` or an OOM kill would, at a
point the product code cannot see coming. The fault lives here, not in jobs/.
"""

from __future__ import annotations

import os
import signal
import sys

from jobs.cli import main
from sweep.io import STATE_JSON


def install(limit: int) -> None:
    """Wrap ``os.replace`` in this process: SIGKILL after ``limit`` state.json renames."""
    real, seen = os.replace, 0

    def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal seen
        real(src, dst, *args, **kwargs)
        if os.fspath(dst).endswith(os.sep + STATE_JSON):
            seen += 1
            if seen == limit:
                os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


if __name__ == "__main__":
    install(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
