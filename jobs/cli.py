"""The ``flame`` command: ``flame <command> [--flags] [hydra overrides...]``.

Commands live in the package that owns them; this module only composes the Hydra config,
parses flags and turns user errors into one clear line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from conf.schema import register
from conf.study import StudyConfig, study_config
from jobs.cli_help import close_match, config_help, keep_experiment, with_suggestion
from sweep.errors import ConfigError
from sweep.io import DiskFull, disk_full_cause, free_space
from sweep.schema import explain

CONFIG_MODULE = "conf"
# Commands that act on a launched sweep default to the cluster it was launched on.
STICKY_CLUSTER = ("launch", "status", "cancel", "resubmit", "run", "check", "eval")
# Commands that launch a planned sweep: its own trainer is composed when none is named.
SWEEP_TRAINER = ("launch", "resubmit")
CONFIG_NAME = "config"
GROUPS = ("experiment", "family", "budgets", "training", "trainer", "cluster", "fit", "design")


@dataclass(frozen=True)
class Command:
    """One subcommand of ``flame``."""

    target: str
    """``module:function``; called as ``function(cfg, args) -> int``."""
    help: str
    """One line for ``flame --help``."""
    arguments: str | None = None
    """``module:function`` adding the command's own flags to an argparse parser."""
    uses_config: bool = True
    """Compose the Hydra config (False: ``cfg`` is None)."""
    typed: bool = False
    """Call with the typed whole config (``conf.study.StudyConfig``) instead of the composed
    DictConfig: a command of a lower layer that cannot type it itself (``sweep``)."""


COMMANDS: dict[str, Command] = {
    "plan": Command("sweep.commands:plan", "budgets x family -> <sweep_dir>/plan.csv",
                    "sweep.commands:plan_arguments", typed=True),
    "launch": Command("jobs.commands:launch", "submit the plan's unfinished runs",
                      "jobs.commands:launch_arguments"),
    "status": Command("jobs.commands:status", "table of runs by state",
                      "jobs.commands:status_arguments"),
    "cancel": Command("jobs.commands:cancel", "cancel runs (scancel) and mark them cancelled",
                      "jobs.commands:cancel_arguments"),
    "resubmit": Command("jobs.commands:resubmit", "submit failed/timed-out runs again",
                        "jobs.commands:resubmit_arguments"),
    "collect": Command("analysis.commands:collect", "runs/*/ -> <sweep_dir>/results.csv"),
    "fit": Command("analysis.commands:fit", "fit scaling laws, plot, select configurations",
                   "analysis.commands:fit_arguments"),
    "report": Command("analysis.report:report_command", "the study as one HTML page -> "
                      "<sweep_dir>/report.html", "analysis.report:report_arguments"),
    "design": Command("analysis.design:design", "simulate designs from a prior law; "
                      "optimise one into a plan", "analysis.design:design_arguments",
                      typed=True),
    "compare": Command("analysis.commands:compare", "compute multiplier of fitted study A over "
                       "B", "analysis.commands:compare_arguments", uses_config=False),
    "run": Command("jobs.study:run", "the whole study: plan, launch, wait, collect, fit",
                   "jobs.study:run_arguments"),
    "eval": Command("jobs.eval:eval_command", "downstream accuracy of the sweep's checkpoints "
                    "(lm-eval) and accuracy against loss", "jobs.eval:eval_arguments"),
    "data": Command("jobs.data:data", "tokenise a jsonl/parquet corpus for Megatron -> "
                    "shards + manifest.json", "jobs.data:data_arguments"),
    "check": Command("jobs.check:check", "one short job on one node: what would fail "
                     "(imports, GPUs, data, tokenizer, checkpoints, signals)",
                     "jobs.check:check_arguments"),
    "release": Command("jobs.release:release", "train the selection's picks; check the law's "
                       "prediction -> <sweep_dir>/release/", "jobs.release:release_arguments"),
    "cluster": Command("jobs.cluster:cluster_command", "a local single-node SLURM: up|down|"
                       "status|env", "jobs.cluster:cluster_arguments", uses_config=False),
}


def _resolve(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Hydra overrides (``key=value``, ``+key=v``, ``~key``) vs. the command's own arguments."""
    overrides, rest = [], []
    for token in argv:
        is_override = not token.startswith("-") and ("=" in token or token.startswith("~"))
        (overrides if is_override else rest).append(token)
    return overrides, rest


def compose(overrides: Sequence[str]) -> DictConfig:
    """The composed config, checked against the schema (every group typed), or a ConfigError
    naming the bad key."""
    return compose_typed(overrides)[0]


def compose_typed(overrides: Sequence[str]) -> tuple[DictConfig, StudyConfig]:
    """The composed config and the same typed (built once), or a ConfigError naming the bad
    key."""
    cfg = compose_hydra(overrides)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config keys {missing} have no value; set them, e.g. {missing[0]}=...")
    try:
        study = study_config(cfg)  # also catches keys added with +key=... and cross-field checks
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    return cfg, study


def compose_hydra(overrides: Sequence[str]) -> DictConfig:
    """Hydra's composition of conf/ with ``overrides`` (schemas registered first), or a
    ConfigError naming the bad key; not yet checked for missing values or typed."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException

    register()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            try:
                return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
            except (AttributeError, AssertionError):  # how OmegaConf fails on a null node
                plain, onto_null = _split_null_overrides(overrides, hydra_compose)
                cfg = hydra_compose(config_name=CONFIG_NAME, overrides=plain)
                _set_null_nodes(cfg, onto_null)
                return cfg
    except (HydraException, OmegaConfBaseException) as err:
        raise composition_error(err) from None


def composition_error(err: Exception) -> ConfigError:
    """The ConfigError for an error Hydra's composition raised: one line naming the key."""
    return ConfigError(_explain(err))


def _split_null_overrides(overrides: Sequence[str], hydra_compose: Callable
                          ) -> tuple[list[str], dict[str, dict]]:
    """Overrides that set a key inside a node whose default is null (``planner.prior={k:..}``
    or ``planner.prior.k=..``), apart from the rest: OmegaConf cannot merge into a null
    structured node (AttributeError or AssertionError), so those are assigned after
    composition. Called only when a plain composition failed so: the probe costs a compose."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = [(text, parser.parse_override(text)) for text in overrides]
    valued = [(text, o) for text, o in parsed if "." in o.key_or_group and not o.is_delete()]
    if not valued:
        return list(overrides), {}
    probe = hydra_compose(config_name=CONFIG_NAME,
                          overrides=[t for t, o in parsed if (t, o) not in valued])
    plain, onto_null = list(overrides), {}
    for text, override in valued:
        parts = override.key_or_group.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            node = OmegaConf.select(probe, prefix, default="<absent>")
            if node is None and OmegaConf.is_dict(OmegaConf.select(probe, ".".join(
                    parts[:depth - 1])) if depth > 1 else probe):
                value = override.value()
                if depth == len(parts) and not isinstance(value, dict):
                    break  # a scalar or list onto a null key: Hydra handles that itself
                tree = onto_null.setdefault(prefix, {})
                if depth == len(parts):
                    tree.update(value)
                else:
                    _nest(tree, parts[depth:], value)
                plain.remove(text)
                break
    return plain, onto_null


def _nest(tree: dict, path: list[str], value: object) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _set_null_nodes(cfg: DictConfig, onto_null: dict[str, dict]) -> None:
    for key, value in onto_null.items():
        parent, _, name = key.rpartition(".")
        node = (OmegaConf.select(cfg, parent) if parent else cfg)._get_node(name)
        schema = node._metadata.ref_type
        if dataclasses.is_dataclass(schema):  # typed: start from the schema, then merge
            OmegaConf.update(cfg, key, OmegaConf.structured(schema), merge=False)
        OmegaConf.update(cfg, key, value, merge=True)  # errors then name the full key


def _explain(err: Exception) -> str:
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else None
    if cause is not None and getattr(cause, "full_key", None):
        return explain(cause)
    text = " ".join(str(err).split())
    if "Could not override '" in text or "not in struct" in text:
        key = text.split("'")[1]
        return (f"unknown config key '{key}': check its spelling against `flame <command> "
                "--help`")
    if "Could not find" in text:
        return f"{text.split('Available options')[0].strip()}; `flame <command> --help` lists " \
               "each group's options"
    if isinstance(err, OmegaConfBaseException):
        return explain(err)
    return text


def group_options(group: str) -> list[str]:
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return sorted(loader.get_group_options(group))


def print_config_help(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    print("\nConfig groups (choose with group=option):")
    for group in GROUPS:
        print(f"  {group:<11} {', '.join(group_options(group))}")
    print()
    print("\n".join(config_help(cfg, lambda name: _trainer_values(name, overrides))))
    print("\nThe whole composed config: `--cfg`.")


def _trainer_values(name: str, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The ``trainer`` section as ``trainer=<name>`` with the user's other overrides gives it
    (None when those do not compose with it, e.g. a key only another trainer has). Hydra's
    composition only: the section is for reading, not typed or checked."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException

    kept = [o for o in overrides if not o.lstrip("+~").startswith("trainer")]
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=[*kept, f"trainer={name}"])
        return OmegaConf.to_container(cfg.trainer, resolve=True)
    except (HydraException, OmegaConfBaseException, AttributeError, AssertionError):
        return None


def build_parser(name: str, command: Command) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"flame {name}", description=command.help, add_help=False,
        epilog="Any key=value argument is a Hydra override (see the config keys below).")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and the config")
    if command.uses_config:
        parser.add_argument("--cfg", action="store_true", help="print the composed config, exit")
    if command.arguments:
        _resolve(command.arguments)(parser)
    return parser


def _use_recorded_cluster(cfg: DictConfig) -> bool:
    """Set the cluster this sweep was launched on, if another; say whether it did."""
    from jobs.sweepdir import recorded_cluster

    recorded = recorded_cluster(Path(cfg.sweep_dir))
    if recorded is not None and recorded.get("name") != cfg.cluster.get("name"):
        print(f"(using cluster={recorded.get('name')}, which this sweep was launched on; "
              "pass cluster=... to choose another)", file=sys.stderr)
        cfg.cluster = recorded
        return True
    return False


def flame_version() -> str:
    """flame's version, from the installed package's metadata."""
    try:
        return version("flame")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def usage() -> str:
    lines = ["usage: flame <command> [--flags] [key=value ...]", "       flame --version",
             "", "commands:"]
    lines += [f"  {name:<9} {c.help}" for name, c in COMMANDS.items()]
    lines.append("\n`flame <command> --help` lists its flags, the config groups and keys.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    # One BLAS thread: fits are small, and on a shared 2-core machine OpenBLAS threads made
    # scipy's L-BFGS-B 5x slower; training jobs get their threads from the scheduler.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        return _main(argv)
    except BrokenPipeError:  # `flame ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (130: killed by SIGINT)
        print(interrupted_line(list(sys.argv[1:] if argv is None else argv)), file=sys.stderr)
        return 130


# Commands after whose Ctrl-C submitted runs go on: local workers and SLURM jobs run apart.
SWEEP_COMMANDS = ("launch", "status", "run", "collect", "resubmit", "cancel", "release")


def interrupted_line(argv: list[str]) -> str:
    """What a Ctrl-C left running and how to go on, e.g. for ``flame run experiment=demo``:
    ``flame run: interrupted; runs already submitted keep running (local workers, SLURM jobs):
    `flame status --watch experiment=demo` follows them, `flame run experiment=demo` again
    resumes``."""
    name = argv[0] if argv else ""
    again = shlex.join(["flame", *argv])
    if name not in SWEEP_COMMANDS:
        return f"flame {name}: interrupted; `{again}` runs it again"
    overrides, _ = split_argv(argv[1:])
    watch = shlex.join(["flame", "status", "--watch", *overrides])
    if name == "status":
        return (f"flame status: interrupted; the runs keep running (local workers, SLURM "
                f"jobs): `{watch}` follows them")
    return (f"flame {name}: interrupted; runs already submitted keep running (local workers, "
            f"SLURM jobs): `{watch}` follows them, `{again}` again resumes")


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"flame {flame_version()}")
        return 0
    name, argv = argv[0], argv[1:]
    if name not in COMMANDS:
        match = close_match(name, list(COMMANDS))
        mean = f"; did you mean `flame {match}`?" if match else ""
        print(f"flame: unknown command {name!r}{mean}\n\n{usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    parser = build_parser(name, command)
    overrides, rest = split_argv(argv)
    args = parser.parse_args(rest)
    args.overrides = overrides  # what the user named (launch applies only those trainer keys)
    cfg = None
    try:
        composing = overrides
        if name in SWEEP_TRAINER:  # trainer.* keys are the sweep's trainer's (jobs.overrides)
            from jobs.overrides import with_sweep_trainer
            composing = with_sweep_trainer(overrides, compose, group_options("trainer"))
        cfg, study = compose_typed(composing) if command.uses_config else (None, None)
        if name in STICKY_CLUSTER and not any(o.lstrip("+~").startswith("cluster")
                                              for o in overrides):
            if _use_recorded_cluster(cfg) and command.typed:
                study = study_config(cfg)
        if args.help:
            parser.print_help()
            if cfg is not None:
                print_config_help(cfg, overrides)
            return 0
        if cfg is not None and args.cfg:
            print(OmegaConf.to_yaml(cfg, resolve=True), end="")
            return 0
        return int(_resolve(command.target)(study if command.typed else cfg, args) or 0)
    except ConfigError as err:
        print(f"flame {name}: error: {error_line(str(err), name, overrides)}", file=sys.stderr)
        return 2
    except Exception as err:  # a full disk: one line naming the file, not a traceback
        if (cause := disk_full_cause(err)) is None:
            raise
        where = cfg.get("sweep_dir") if cfg is not None else None
        print(f"flame {name}: error: {disk_full_line(cause, where)}", file=sys.stderr)
        return 1


def disk_full_line(cause: OSError, sweep_dir: str | None = None) -> str:
    """A write refused for want of space, as the user reads it: the file (else the sweep it
    was under), "disk full", the space left there and the fix (what was written before stays
    whole: every state file is replaced atomically)."""
    if cause.filename is None:
        where = f" under {sweep_dir}" if sweep_dir else ""
        free = f"; {free_space(sweep_dir)}" if sweep_dir else ""
        return (f"a write{where} failed: disk full ({cause.strerror}{free}); free space "
                "there, then run the command again")
    full = cause if isinstance(cause, DiskFull) else DiskFull(cause.filename, cause)
    return f"{full}; free space there, then run the command again"


def error_line(message: str, name: str, overrides: Sequence[str]) -> str:
    """A ConfigError's message as the user reads it: this command's name for ``flame
    <command>``, a did-you-mean for a misspelt key or option, and suggested commands that keep
    the user's ``experiment=``."""
    message = with_suggestion(message.replace("flame <command>", f"flame {name}"),
                              group_options)
    return keep_experiment(message, overrides,
                           lambda command: command in COMMANDS and COMMANDS[command].uses_config)


if __name__ == "__main__":
    sys.exit(main())
