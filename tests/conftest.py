"""Suite-wide: how files are handed to the workers, and Hydra's compositions made once per run
for each choice of config groups (``_compose_once``; tests/compose_memo.py).

``tests/run.sh`` runs the suite with ``--dist loadfile --no-loadscope-reorder``: each file goes
whole to one worker, in collection order. A long file handed out last keeps one worker busy
while the others idle, so the files that take longest go first (longest-processing-time-first
scheduling); the rest keep pytest's order. The list is a hint measured on the 2-core machine
(seconds of wall per file, four workers, at 6905606): a file missing from it only runs later.

The files whose tests import torch in the worker (``TORCH_FILES``) go to one worker as one
unit: torch costs a process ~2.5 s of CPU, and torch._dynamo 1.3 s more when an optimiser is
first built, which every worker paid when these files were spread over them. Their module-level
imports of torch are deferred (tests/lazy.py) so that collecting them imports nothing heavy. A
file missing from the list only costs its worker that import.
"""

from __future__ import annotations

import os

import pytest

LONGEST_FIRST = (
    "tests/jobs/test_slurm.py",                 # 120 s
    "tests/jobs/test_bad_inputs.py",            # 115 s
    "tests/jobs/test_local_faults.py",          # 111 s
    "tests/jobs/test_megatron_launch.py",       # 94 s
    "tests/jobs/test_adaptive.py",              # 93 s
    "tests/jobs/test_megatron_slurm.py",        # 74 s
    "tests/jobs/test_study.py",                 # 65 s
    "tests/analysis/report/test_html_report.py",
    "tests/jobs/test_launch_overrides.py",
    "tests/jobs/test_slurm_faults.py",
    "tests/trainers/test_megatron.py",
    "tests/analysis/design/test_design.py",
    "tests/jobs/test_release.py",
    "tests/trainers/test_embedded_train.py",
    "tests/jobs/test_data.py",
    "tests/analysis/design/test_design_misfit.py",
    "tests/jobs/test_output_files.py",
    "tests/jobs/test_eval.py",
    "tests/analysis/fit/test_report.py",
    "tests/jobs/test_check.py",                 # 42 s
)


TORCH_FILES = frozenset({
    "tests/analysis/collect/test_collect.py",
    "tests/analysis/collect/test_routing.py",
    "tests/jobs/test_data.py",  # megatron-core's IndexedDataset reads the shards
    "tests/jobs/test_disk_full.py",  # torch.save on a full disk
    "tests/jobs/test_eval.py",
    "tests/trainers/test_data_order.py",
    "tests/trainers/test_embedded_branch.py",
    "tests/trainers/test_embedded_model.py",
    "tests/trainers/test_embedded_train.py",
    "tests/trainers/test_golden_embedded.py",
    "tests/trainers/test_lm_eval_adapter.py",
    "tests/trainers/test_megatron_eval.py",
    "tests/trainers/test_routing.py",
})
TORCH_UNIT = "torch"  # the scheduling unit of TORCH_FILES


@pytest.hookimpl(optionalhook=True)  # xdist's hook: pytest -p no:xdist runs without it
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with ``TORCH_FILES`` as one unit (xdist's own scheduler else)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class TorchFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return TORCH_UNIT if path in TORCH_FILES else path

    return TorchFilesTogether(config, log)


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {path: k for k, path in enumerate(LONGEST_FIRST)}
    first = min((rank[path] for path in TORCH_FILES if path in rank), default=len(rank))
    rank.update({path: first for path in TORCH_FILES})  # the unit goes where its first file would
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


@pytest.fixture(autouse=True, scope="session")
def _compose_once(tmp_path_factory):
    """Repeated compositions from memory (tests/compose_memo.py says why that is exact)."""
    import jobs.cli
    from tests.compose_memo import memoised
    from trainers.settings import TRAINER_CONFIGS

    def trainers() -> tuple[str, ...]:  # by name and class: the key crosses processes
        return tuple(f"{name}={cls.__module__}.{cls.__qualname__}"
                     for name, cls in TRAINER_CONFIGS.items())

    base = tmp_path_factory.getbasetemp()  # a worker's: its parent is the run's, shared
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "compositions"
    real = jobs.cli.compose_hydra
    jobs.cli.compose_hydra = memoised(real, trainers, shared)
    yield
    jobs.cli.compose_hydra = real
