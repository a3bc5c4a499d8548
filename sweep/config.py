"""From the composed Hydra config to the planner's inputs, and from a plan to plan.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from sweep.arch import ConfigError
from sweep.family import build_family
from sweep.io import CONFIG_YAML, PLAN_CSV, atomic_write_text
from sweep.planner import Plan, PlannerSettings, Prior, plan

# Trainer keys that only change how a run executes (threads, logging, paths), never its
# result; every other trainer key and the whole `training` group go into run_id.
OPERATIONAL_KEY = "operational_keys"


def load_sweep_config(sweep_dir: Path) -> dict[str, Any] | None:
    """``<sweep>/config.yaml`` as a plain dict; None when there is none, one clear error when it
    cannot be read."""
    path = Path(sweep_dir) / CONFIG_YAML
    if not path.is_file():
        return None
    try:
        loaded = OmegaConf.load(path)
        return OmegaConf.to_container(loaded, resolve=True)  # type: ignore[return-value]
    except Exception as err:  # noqa: BLE001 - any YAML/interpolation error: one clear line
        raise ConfigError(f"{path}: not readable YAML ({err}); re-run `flame plan`") from None


def container(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def settings_from_cfg(cfg: DictConfig) -> PlannerSettings:
    p = container(cfg.planner)
    prior = p.get("prior")
    if prior is not None:
        missing = {"k", "a", "span_log10"} - set(prior)
        if missing:
            raise ConfigError(f"planner.prior: missing {sorted(missing)}; give k, a, span_log10")
        prior = Prior(float(prior["k"]), float(prior["a"]), float(prior["span_log10"]))
    cluster = cfg.get("cluster") or {}
    optional = lambda key: None if p.get(key) is None else float(p[key])  # noqa: E731
    return PlannerSettings(
        global_batch_size=int(p["global_batch_size"]),
        accounting=str(cfg.accounting),
        flops_formula=str(cfg.flops_formula),
        min_iters=int(p.get("min_iters") or 1),
        iters_rounding=str(p.get("iters_rounding") or "ceil"),
        max_tokens=optional("max_tokens"),
        min_tokens_per_param=optional("min_tokens_per_param"),
        max_tokens_per_param=optional("max_tokens_per_param"),
        prior=prior,
        device_peak_flops=float(cluster.get("device_peak_flops", 989e12)),
        assumed_mfu=float(cluster.get("assumed_mfu", 0.35)),
    )


def hash_context(cfg: DictConfig) -> dict[str, Any]:
    """What besides the architecture and tokens changes a run's result."""
    trainer = container(cfg.trainer) if "trainer" in cfg else {}
    skip = set(trainer.pop(OPERATIONAL_KEY, []) or [])
    trainer = {k: v for k, v in trainer.items() if k not in skip}
    training = container(cfg.training) if "training" in cfg else {}
    return {"training": training, "trainer": trainer}


def plan_from_cfg(cfg: DictConfig) -> tuple[Plan, PlannerSettings]:
    settings = settings_from_cfg(cfg)
    members = build_family(container(cfg.family))
    budgets = list(cfg.budgets.flops) if cfg.budgets.get("flops") is not None else []
    return plan(budgets, members, settings, hash_context(cfg)), settings


def plan_csv_text(the_plan: Plan, settings: PlannerSettings) -> str:
    rows = [run.to_row(settings) for run in the_plan.runs]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    return buf.getvalue()


def _fmt(value: Any) -> Any:
    # repr() of a float round-trips exactly and is stable across runs and platforms.
    return repr(value) if isinstance(value, float) else value


def read_plan(sweep_dir: Path) -> list[dict[str, str]]:
    """plan.csv's rows in order (strings, as csv gives them), or a ConfigError saying how to
    make one."""
    path = Path(sweep_dir) / PLAN_CSV
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run `flame plan sweep_dir={sweep_dir}` first")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "run_id" not in rows[0]:
        raise ConfigError(f"{path} has no run_id column; re-plan with `flame plan`")
    return rows


def write_plan(sweep_dir: Path, the_plan: Plan, settings: PlannerSettings, cfg: DictConfig) -> None:
    """Write plan.csv and config.yaml atomically (config first: a plan never lacks its config).

    Re-planning with a changed config replaces the plan; runs keep their ids wherever their
    result-determining inputs are unchanged, so finished runs are reused.
    """
    text = plan_csv_text(the_plan, settings)
    atomic_write_text(sweep_dir / CONFIG_YAML, OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(sweep_dir / PLAN_CSV, text)
