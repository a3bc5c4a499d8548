"""The printed summary of a fit: rich tables built from its ``FitResult`` only."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from analysis.fit.result import FitResult


def _g(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}"
    return str(value)


def _ci(ci: list | None) -> str:
    return "-" if not ci else f"[{_g(ci[0])}, {_g(ci[1])}]"


def _approach2(fit: FitResult) -> list:
    a2 = fit.approach2
    how = "Porian et al. interpolation" if a2.estimator == "porian" else \
        "isoFLOP parabolas"
    table = Table(title=f"Approach 2: {how} (N_opt per budget)", title_justify="left")
    for col in ("budget (FLOPs)", "runs", "N_opt", "D_opt", "loss at opt", "used / reason"):
        table.add_column(col, justify="right" if col != "used / reason" else "left")
    for b in a2.budgets:
        table.add_row(_g(b.budget, 3), str(b.n_points), _g(b.n_opt), _g(b.d_opt),
                      _g(b.loss_opt), "used" if b.used else b.reason)
    out: list = [table]
    if a2.note:
        out.append(Text(f"  note: {a2.note}"))
    if a2.a is None:
        out.append(Text(f"  Approach 2 power laws: not applicable ({a2.reason})"))
    else:
        out.append(Text(f"  N_opt = {_g(a2.k)} C^{_g(a2.a)}  a = {_g(a2.a)} "
                        f"{_ci(a2.a_ci)};  D_opt ~ C^{_g(a2.b)}  b = {_g(a2.b)} "
                        f"{_ci(a2.b_ci)}  ({a2.bootstrap} "
                        f"{a2.bootstrap_kind or ''} bootstraps, "
                        f"{int(fit.settings['confidence'] * 100)}% intervals)"))
        if a2.interval_reason:
            out.append(Text(f"  no interval: {a2.interval_reason}"))
    return out


def _approach3(fit: FitResult) -> list:
    a3 = fit.approach3
    if not a3.fitted:
        return [Text(f"Approach 3: not applicable ({a3.reason})")]
    table = Table(title=f"Approach 3: L(N, D) = E + A/N^alpha + B/D^beta  ({a3.n_points} "
                        f"points, summed Huber objective {a3.objective:.7g})",
                  title_justify="left")
    for col in ("parameter", "estimate", "interval", "std. error"):
        table.add_column(col, justify="right")
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        table.add_row(name, _g(getattr(a3, name), 5), _ci(a3.ci.get(name)),
                      _g(a3.se.get(name), 3))
    out: list = [table]
    if a3.interval_reason:
        out.append(Text(f"  no interval: {a3.interval_reason}"))
    out.extend(Text(f"  {line}") for line in noise_lines(fit))
    return out


def noise_lines(fit: FitResult) -> list[str]:
    """fit.json's variance components in words (none without replicates)."""
    vc = fit.variance_components
    if not vc:
        return []
    return [f"Noise: seed-to-seed SD {_g(vc.get('seed_sd'), 3)} of log loss "
            f"({vc.get('n_replicated_points')} points with replicates); the law's misfit "
            f"shared by a shape SD {_g(vc.get('shape_sd'), 3)} ({vc.get('n_shapes')} shapes); "
            "the intervals resample both"]


def _extrapolation(fit: FitResult) -> list:
    ex = fit.extrapolation
    if "reason" in ex:
        return [Text(f"Extrapolation check: not applicable ({ex['reason']})")]
    obs = ex["observed"]
    lines = [f"Extrapolation check: refit without {ex['held_out_budget']:.3g} FLOPs; observed "
             f"N_opt {_g(obs['n_opt'])}, loss {_g(obs['loss_opt'])} ({obs['source']})"]
    for name in ("approach2", "approach3"):
        e = ex.get(name, {})
        if "reason" in e:
            lines.append(f"  {name}: not applicable ({e['reason']})")
        else:
            lines.append(f"  {name}: predicted N_opt {_g(e['n_opt_pred'])} "
                         f"(log10 error {e['n_opt_log10_error']:+.3f}), loss "
                         f"{_g(e['loss_opt_pred'])} (relative error "
                         f"{e['loss_opt_rel_error']:+.2%})")
    return [Text("\n".join(lines))]


def _selection(fit: FitResult) -> list:
    sel = fit.selection
    if not sel.get("rows"):
        return [Text(f"Selection: not applicable ({sel.get('reason', '')})")]
    table = Table(title=f"Selection ({sel['approach']})", title_justify="left")
    cols = ["budget", "n_opt", "d_opt", "loss_opt"]
    if sel["applicable"]:
        cols += ["member", "member_n", "log10_n_ratio", "member_iterations"]
    flagged = any(row.get("warning") for row in sel["rows"])
    for col in cols:
        table.add_column(col, justify="right")
    if flagged:
        table.add_column("flag", justify="left")
    for row in sel["rows"]:
        cells = [_g(row[c], 3 if c == "log10_n_ratio" else 4) for c in cols]
        table.add_row(*cells, *([_flag(row.get("warning"))] if flagged else []))
    out: list = [table]
    if not sel["applicable"]:
        out.append(Text(f"  members: not applicable ({sel['reason']})"))
    else:
        out.append(Text(f"  members of family {sel.get('family') or '?'} "
                        f"({sel.get('candidates', 'planned')} at each budget)"))
    return out + _released(sel["rows"])


def _flag(warning: str | None) -> str:
    """A selection row's warnings, a word each (``far``: from the optimum, ``extrapolation``);
    the warnings above the tables say why."""
    if not warning or not isinstance(warning, str):
        return ""
    return ", ".join(part.split()[0] for part in warning.split("; ") if part.strip())


def _released(rows: list[dict]) -> list:
    """The chosen members beside FLAME-MoE's released models (analysis/release.py)."""
    rows = [r for r in rows if r.get("released_name")]
    if not rows:
        return []
    table = Table(title="Beside FLAME-MoE's released models", title_justify="left")
    cols = ("budget", "chosen", "chosen N", "chosen tokens", "released", "shape", "released N",
            "released tokens", "same")
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(_g(r["budget"], 3), r.get("member") or "-", _g(r.get("member_n"), 3),
                      _g(r.get("member_tokens"), 3), r["released_name"], r["released_shape"],
                      _g(r["released_n"], 3), _g(r["released_tokens"], 3),
                      "yes" if r["released_same"] else "no")
    notes = [f"  {_g(r['budget'], 3)}: {r['released_note']}" for r in rows]
    return [table, Text("\n".join(notes))]


def branch_line(fit: FitResult) -> str:
    """How many fitted points are cooldown branches and from which trunks ("" for none)."""
    b = fit.branches
    if not b.get("points") and not b.get("trunks_listed"):
        return ""
    parents = b.get("from_trunks") or {}
    each = ", ".join(f"{k} ({v})" for k, v in parents.items())
    return (f"{b.get('points', 0)} of {fit.n_used} fitted points are branches (cooldowns) "
            f"of {len(parents)} trunk(s){': ' + each if each else ''}; "
            f"{b.get('independent_points', 0)} independent runs; "
            f"{b.get('trunks_listed', 0)} trunk rows listed, not fitted")


def renderables(fit: FitResult) -> list:
    """Everything the summary prints, in order."""
    head = Text(f"{fit.n_used} points fitted, {fit.n_excluded} excluded "
                f"{fit.excluded or ''}; N = {fit.input.n_column}")
    warnings = [Text(f"warning [{w.code}]: {w.message}") for w in fit.warnings]
    branches = [Text(line) for line in [branch_line(fit)] if line]
    return [head, *branches, *warnings, *_approach2(fit), *_approach3(fit), *_extrapolation(fit),
            *_selection(fit)]
