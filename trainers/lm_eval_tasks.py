"""Which lm-eval tasks exist, and how a job loads them offline.

Tasks are lm-evaluation-harness tasks, found by lm-eval's ``TaskManager``: flame's own (the
YAML files under ``LOCAL_TASK_DIRS``: the demo's, built from held-out text of its corpus) by
``include_path`` and, for real models, lm-eval's standard ones by name (hellaswag, arc_easy,
...). Indexing lm-eval's ~15k standard task files takes 10-20 s (minutes on a busy machine), so
a name found among flame's own is never looked up there, and the standard names are kept in a
cache file per lm-eval version.

A local task reads its data with ``dataset_path: json`` and a ``data_files`` path relative to
its YAML's folder; HF ``datasets`` would resolve that against the working directory, so a job
passes lm-eval the task's config with the path made absolute (``task_specs``). Jobs run with
``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` (``offline_env``): nothing is downloaded at run time.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sweep.errors import ConfigError
from sweep.io import atomic_write_text
from trainers.embedded.eval_tasks import TASKS_DIR

LOCAL_TASK_DIRS = (TASKS_DIR,)
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
FLAME_FEWSHOT = {0: ("openbookqa", "winogrande"),
                 10: ("piqa", "arc_easy", "arc_challenge", "hellaswag")}
"""FLAME-MoE's evaluation (cmu-flame/FLAME-MoE e9b2fe2, scripts/evaluate.sh:29-33): six tasks,
two of them zero-shot and four ten-shot."""


FINAL = "final"
"""The label (folder under ``runs/<id>/eval/``) of a run's last checkpoint."""
RESULTS_FILE = "results.json"
"""One checkpoint's lm-eval results (lm-eval's results JSON, with flame's provenance)."""


def checkpoint_label(iteration: int | None) -> str:
    """The folder of a checkpoint's evaluation: ``final`` or ``iter_<step:07d>``."""
    return FINAL if iteration is None else f"iter_{int(iteration):07d}"


def missing_checkpoint(run_dir: Path, checkpoint: Path) -> ConfigError:
    """The error for a completed run whose checkpoint is gone."""
    return ConfigError(f"run {Path(run_dir).name}: completed but its checkpoint {checkpoint} is "
                       "missing; train it again (`flame resubmit`) or leave it out with --runs")


def offline_env() -> None:
    """No network for datasets or models in this process (set before lm-eval is imported)."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)


def local_tasks() -> dict[str, Path]:
    """flame's own tasks: name -> YAML file."""
    found = {}
    for folder in LOCAL_TASK_DIRS:
        for path in sorted(Path(folder).glob("*.yaml")):
            config = yaml.safe_load(path.read_text()) or {}
            if isinstance(config.get("task"), str):
                found[config["task"]] = path
    return found


def task_manager(standard: bool = False) -> Any:
    """lm-eval's TaskManager over flame's task folders (and lm-eval's own with ``standard``)."""
    offline_env()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in LOCAL_TASK_DIRS],
                       include_defaults=standard)


def _cache_file() -> Path:
    from importlib.metadata import version

    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "flame" / "lm_eval" / f"tasks-{version('lm_eval')}.json"


def standard_task_names() -> set[str]:
    """Every task, group and tag name lm-eval's own index holds: indexed once per lm-eval
    version (10-20 s) and kept in ~/.cache/flame/lm_eval/ (the index depends on nothing else)."""
    path = _cache_file()
    try:
        return set(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    names = sorted(task_manager(standard=True).all_tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(names))
    return set(names)


def check_tasks(names: Sequence[str]) -> None:
    """A ConfigError naming the first task lm-eval does not know (with a close match)."""
    if not names:
        raise ConfigError("--tasks: no task named; give lm-eval task names, e.g. "
                          "--tasks hellaswag,arc_easy")
    local = local_tasks()
    missing = [n for n in names if n not in local]
    if not missing:
        return
    known = standard_task_names()
    for name in missing:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known | set(local)), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"--tasks: lm-eval knows no task {name!r}{hint} (`lm_eval ls "
                              "tasks` lists them; flame's own are in "
                              f"{', '.join(str(p) for p in LOCAL_TASK_DIRS)})")


def task_specs(names: Sequence[str]) -> list[str | dict[str, Any]]:
    """What ``simple_evaluate(tasks=...)`` takes: a standard task by name, a local one as its
    config with its data files made absolute."""
    local = local_tasks()
    specs: list[str | dict[str, Any]] = []
    for name in names:
        if name not in local:
            specs.append(name)
            continue
        path = local[name]
        config = yaml.safe_load(path.read_text())
        files = (config.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(files, dict):
            config["dataset_kwargs"]["data_files"] = {
                split: str(path.parent / f) for split, f in files.items()}
        elif isinstance(files, str):
            config["dataset_kwargs"]["data_files"] = str(path.parent / files)
        specs.append(config)
    return specs
