"""Routing health in results.csv: a small real embedded study (one run's router forced onto
two experts is flagged collapsed), Megatron's MoE losses as the stand-in writes them
(train.log and TensorBoard, per layer), the thresholds, and the routing figure."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.collect.results import collect_sweep
from analysis.collect.routing import (
    ROUTING_COLUMNS,
    ROUTING_CSV,
    health,
    layer_rows,
    routing_figure,
)
from analysis.fit.points import load_sweep_results
from analysis.settings import FitSettings
from analysis.sources import Routing, _routing_log, _tb_scalars, _window, read_routing
from sweep.errors import ConfigError
from sweep.io import run_dir
from tests.lazy import LazyModule
from tests.trainers import megatron_standin as standin
from tests.trainers.conftest import make_plan
from trainers.run import train_run
from trainers.settings import Recipe

torch = LazyModule("torch")  # imported by the tests that run (tests/lazy.py)
embedded_model = LazyModule("trainers.embedded.model")


def forced_decoder(*args, **kwargs) -> embedded_model.MoEDecoder:
    """The real decoder with every router replaced by a frozen one whose bias always ranks
    experts 0 and 1 first: every token goes to the same two of the eight experts."""
    model = embedded_model.MoEDecoder(*args, **kwargs)
    for layer in model.layers:
        if isinstance(layer.mlp, embedded_model.MoE):
            h, e = layer.mlp.router.in_features, layer.mlp.experts
            router = torch.nn.Linear(h, e, bias=True)
            with torch.no_grad():
                router.weight.zero_()
                router.bias.copy_(torch.arange(e, 0, -1, dtype=torch.float32))
            layer.mlp.router = router.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Two real embedded runs of the demo family at a tiny budget (16 and 7 steps; the
    corpus cache is the default one, shared with the other tests that train): the second with
    its router forced; then the real `collect`."""
    import trainers.embedded.train as embedded
    from jobs import ledger

    sweep = tmp_path_factory.mktemp("study")
    rows, cfg = make_plan(sweep, "family.members=[{hidden_size:8},{hidden_size:16}]",
                          "budgets.flops=[1e9]", "planner.min_iters=5",
                          "trainer.eval_iters=1", "trainer.eval_batch_size=8",
                          "trainer.eval_interval=1000")  # one routing window: the whole run
    assert len(rows) == 2
    patch = pytest.MonkeyPatch()
    patch.setenv("FLAME_THREADS", "1")
    for row, decoder in zip(rows, (embedded_model.MoEDecoder, forced_decoder)):
        patch.setattr(embedded, "MoEDecoder", decoder)
        rd = run_dir(sweep, row["run_id"])
        # The ledger as a worker keeps it (the report reads it: runs by state, cost).
        ledger.transition(sweep, row["run_id"], ledger.RUNNING, job_id="in-process")
        train_run(dict(row), json.loads(json.dumps(cfg)), rd)
        ledger.transition(sweep, row["run_id"], ledger.COMPLETED)
    patch.undo()
    return sweep, collect_sweep(sweep, cfg)


def test_every_run_has_routing_columns_and_the_forced_router_is_collapsed(study):
    sweep, results = study
    assert set(ROUTING_COLUMNS) <= set(results.columns)
    healthy, forced = results.iloc[0], results.iloc[1]
    assert list(results["flag"]) == ["ok", "ok"]  # a collapsed router keeps its (real) loss
    assert healthy["routing_status"] == "ok", healthy["routing_reason"]
    assert 1.0 <= healthy["routing_load_max_mean"] < 3.0
    assert 0.1 < healthy["routing_min_expert_fraction"] <= 1.0
    assert healthy["routing_aux_loss"] == pytest.approx(1.0, abs=0.2)
    assert forced["routing_status"] == "collapsed"
    assert "fit.routing_min_share" in forced["routing_reason"]
    assert "fit.routing_max_load" in forced["routing_reason"]
    assert forced["routing_load_max_mean"] == pytest.approx(4.0)  # E/k: 8 experts, top-2
    assert forced["routing_min_expert_fraction"] == 0.0
    # softmax of the bias 8..1: experts 0 and 1 hold p0, p1; aux = E (p0 + p1) / 2
    p = torch.arange(8, 0, -1, dtype=torch.float64).softmax(0)
    assert forced["routing_aux_loss"] == pytest.approx(4.0 * float(p[0] + p[1]), rel=1e-5)
    written = pd.read_csv(sweep / "results.csv")
    assert list(written["routing_status"]) == ["ok", "collapsed"]
    layers = pd.read_csv(sweep / ROUTING_CSV, dtype={"run_id": str})
    assert list(layers["run_id"]) == list(results["run_id"]) and set(layers["layer"]) == {1}
    shares = [float(x) for x in layers["expert_fraction"].iloc[1].split()]
    assert shares == pytest.approx([0.5, 0.5] + [0.0] * 6)


def test_routing_figure_drawn_from_the_results(study):
    sweep, _ = study
    points = load_sweep_results(sweep / "results.csv", FitSettings())
    paths = routing_figure(sweep, points, FitSettings())
    assert [p.name for p in paths] == ["routing.png", "routing.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert routing_figure(sweep, points.drop(columns=list(ROUTING_COLUMNS)), FitSettings()) == []



def test_the_report_shows_routing_health_from_the_real_study(study):
    """collect's routing_* columns and the routing figure of the real study, on the report
    page (analysis/report_extras.py): the collapsed run named with the producer's reason."""
    from analysis.report.extras import routing_section
    from analysis.report.html import write_report

    sweep, _ = study
    results = pd.read_csv(sweep / "results.csv", dtype={"run_id": str})
    routing_figure(sweep, load_sweep_results(sweep / "results.csv", FitSettings()),
                   FitSettings())
    section = routing_section(sweep, results)
    assert section.notes == ["routing_status: 1 ok, 1 collapsed"]
    table, figure = section.items
    assert table.id == "routing-table" and set(ROUTING_COLUMNS) <= set(table.columns)
    rows = {r[0].sort: dict(zip(table.columns, (c.sort for c in r))) for r in table.rows}
    forced = rows[results["run_id"].iloc[1]]
    assert forced["routing_status"] == "collapsed"
    assert forced["routing_reason"] == results["routing_reason"].iloc[1]
    assert figure.id == "fig-routing" and figure.uri.startswith("data:image/svg+xml;base64,")
    page = write_report(sweep).read_text()
    assert 'id="routing-table"' in page and 'id="fig-routing"' in page
    assert "routing_status: 1 ok, 1 collapsed" in page


def _standin_run(tmp_path: Path, *extra: str) -> Path:
    """The stand-in as launch.sh runs it: 3 layers (one dense), 40 iterations, logging every
    5; its stdout becomes the run's train.log, TensorBoard goes to runs/<id>/tensorboard."""
    rd = tmp_path / "run"
    argv = ["--train-iters", "40", "--log-interval", "5", "--global-batch-size", "16",
            "--seq-length", "64", "--num-layers", "3", "--hidden-size", "64",
            "--num-experts", "8", "--moe-router-topk", "2", "--moe-ffn-hidden-size", "32",
            "--moe-layer-freq", "[0]*1+[1]*2", "--moe-aux-loss-coeff", "0.01",
            "--moe-z-loss-coeff", "0.001", "--mock-data", "--eval-iters", "1",
            "--tensorboard-dir", str(rd / "tensorboard"), *extra]
    out = subprocess.run([sys.executable, str(Path(standin.__file__)), *argv],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (rd / "train.log").write_text(out.stdout)
    return rd


def _expected(layer_losses) -> dict[str, list[float]]:
    """The stand-in's own per-layer losses averaged over iterations 31-40 (the last quarter)."""
    args = standin.parse(["--train-iters", "40", "--num-layers", "3", "--num-experts", "8",
                          "--moe-layer-freq", "[0]*1+[1]*2", "--moe-aux-loss-coeff", "0.01",
                          "--moe-z-loss-coeff", "0.001"])
    w, sums = 6.0 + random.Random(args.seed).random(), {}
    for it in range(1, 41):
        w = standin._step(w, args.seed, it)
        if it > 30:
            for name, values in layer_losses(args, w).items():
                sums[name] = [a + b / 10 for a, b in zip(sums.get(name, [0.0] * 3), values)]
    return sums


def _moe_tag(tag: str) -> bool:
    """The MoE losses' scalars, not the stand-in's ``lm loss`` ones."""
    return not tag.startswith("lm loss")


def test_megatron_moe_losses_per_layer_from_tensorboard_then_train_log(tmp_path):
    rd = _standin_run(tmp_path, "--moe-per-layer-logging")
    want = _expected(standin.layer_moe_losses)
    got = read_routing(rd, "megatron")
    assert got.source == "tensorboard" and got.iteration == 40
    assert [lay["layer"] for lay in got.layers] == [1, 2]  # layer 0 is dense: all zeros
    for lay in got.layers:
        assert lay["aux_loss"] == pytest.approx(want["load_balancing_loss"][lay["layer"]],
                                                rel=1e-6)
        assert lay["z_loss"] == pytest.approx(want["z_loss"][lay["layer"]], rel=1e-6)
    assert got.aux_loss == pytest.approx(sum(want["load_balancing_loss"]) / 2, rel=1e-6)
    # cadence: every iteration, whatever --log-interval (moe_utils.py:1026-1033)
    tags = _tb_scalars(rd, _moe_tag)
    assert sorted(tags) == sorted(["load_balancing_loss", "z_loss"] + [
        f"moe/{name}_layer_{i}" for name in ("load_balancing_loss", "z_loss") for i in range(3)])
    assert all([step for step, _ in points] == list(range(1, 41)) for points in tags.values())
    # Megatron logs the losses without their coefficients: about 1 and 4 + w, not 0.01 x
    assert 1.0 < got.aux_loss < 1.2 and got.z_loss > 4.0
    # train.log alone (no TensorBoard): the layer means, from its 7-digit lines
    for event in (rd / "tensorboard").iterdir():
        event.unlink()
    log = read_routing(rd, "megatron")
    assert log.source == "train.log" and log.layers == []
    assert log.aux_loss == pytest.approx(got.aux_loss, rel=1e-6)
    assert log.z_loss == pytest.approx(got.z_loss, rel=1e-6)
    assert health(log, FitSettings())["routing_status"] == "ok"
    tight = health(log, FitSettings(routing_max_aux_loss=1.01))
    assert tight["routing_status"] == "collapsed" and "mean over layers" in \
        tight["routing_reason"]
    assert math.isnan(tight["routing_load_max_mean"])  # Megatron reports no expert loads
    assert read_routing(rd, "simulated") is None  # made-up losses are never read


def test_megatron_without_per_layer_logging_writes_only_the_means(tmp_path):
    rd = _standin_run(tmp_path)
    got = read_routing(rd, "megatron")
    assert got.source == "tensorboard" and got.layers == []
    assert health(got, FitSettings())["routing_status"] == "ok"


def test_megatron_with_a_zero_aux_coefficient_reports_no_load_balancing_loss(tmp_path):
    rd = _standin_run(tmp_path, "--moe-aux-loss-coeff", "0")  # the later flag wins
    assert "| load_balancing_loss" not in (rd / "train.log").read_text()  # 0 is not printed
    assert set(_tb_scalars(rd, _moe_tag)) == {"load_balancing_loss", "z_loss"}
    got = read_routing(rd, "megatron")  # TensorBoard's zeros: not computed, not balanced
    assert math.isnan(got.aux_loss) and got.z_loss > 4.0
    assert health(got, FitSettings())["routing_status"] == "unknown"


def test_megatron_with_a_zero_z_coefficient_logs_nan_and_reads_no_z_loss(tmp_path):
    """core_v0.16.1 tracks z_loss / coeff (router.py:505-507): 0/0 = NaN with coefficient 0.
    TensorBoard gets NaN every iteration, the log line drops it (NaN > 0 is False,
    training.py:2067-2069); flame reads it as not logged, and the router is not collapsed."""
    rd = _standin_run(tmp_path, "--moe-z-loss-coeff", "0", "--moe-per-layer-logging")
    assert "| z_loss" not in (rd / "train.log").read_text()  # the arguments block names it
    tags = _tb_scalars(rd, _moe_tag)
    assert all(v == 0.0 for _, v in tags["moe/z_loss_layer_0"])  # the dense layer
    for tag in ("z_loss", "moe/z_loss_layer_1", "moe/z_loss_layer_2"):
        assert len(tags[tag]) == 40 and all(math.isnan(v) for _, v in tags[tag])
    got = read_routing(rd, "megatron")
    assert math.isnan(got.z_loss) and 1.0 < got.aux_loss < 1.2
    assert [sorted(lay) for lay in got.layers] == [["aux_loss", "layer"]] * 2
    cols = health(got, FitSettings())
    assert cols["routing_status"] == "ok" and math.isnan(cols["routing_z_loss"])
    assert all(math.isnan(row["z_loss"]) for row in layer_rows("r", got))
    # the recipe allows it (FLAME sets 1e-3); a negative coefficient is refused
    demo = yaml.safe_load((Path(__file__).resolve().parents[3] / "conf/training/demo.yaml")
                          .read_text())
    demo.pop("defaults")
    assert Recipe.from_cfg(demo | {"z_loss_coeff": 0.0}).z_loss_coeff == 0.0
    with pytest.raises(ConfigError, match=r"^training.z_loss_coeff=-0.001: must be >= 0"):
        Recipe.from_cfg(demo | {"z_loss_coeff": -1e-3})


def test_megatron_seq_aux_loss_is_read_as_the_load_balancing_loss(tmp_path):
    """A single seq_aux_loss is a str after arguments.py:1031-1032, and training.py:1960's
    ``"aux_loss" in`` it is a substring test: load_balancing_loss is tracked too, at 0. flame
    reads seq_load_balancing_loss as the aux loss then."""
    rd = _standin_run(tmp_path, "--moe-router-load-balancing-type", "seq_aux_loss")
    log = (rd / "train.log").read_text()
    assert "| seq_load_balancing_loss: " in log and "| load_balancing_loss: " not in log
    tags = _tb_scalars(rd, _moe_tag)
    assert sorted(tags) == ["load_balancing_loss", "seq_load_balancing_loss", "z_loss"]
    assert all(v == 0.0 for _, v in tags["load_balancing_loss"])
    want = _window(tags["seq_load_balancing_loss"], 40)
    for got in (read_routing(rd, "megatron"), _routing_log(rd)):
        assert got.aux_loss == pytest.approx(want, rel=1e-6) and 1.0 < got.aux_loss < 1.2
        assert health(got, FitSettings())["routing_status"] == "ok"


def test_health_thresholds_and_unknown():
    layer = {"layer": 3, "expert_fraction": [0.3, 0.3, 0.38, 0.02], "load_max_mean": 1.52,
             "entropy": 0.5, "aux_loss": 1.1, "z_loss": 2.0}
    routing = Routing("metrics.jsonl", 90, [layer], 1.1, 2.0)
    cols = health(routing, FitSettings())
    assert cols["routing_status"] == "collapsed"
    assert cols["routing_reason"].startswith("layer 3: expert 3 took 0.08 of its uniform share")
    assert cols["routing_min_expert_fraction"] == pytest.approx(0.08)
    assert health(routing, FitSettings(routing_min_share=0.05))["routing_status"] == "ok"
    unknown = health(None, FitSettings())
    assert unknown["routing_status"] == "unknown" and math.isnan(unknown["routing_aux_loss"])


@pytest.mark.parametrize("field,value", [("routing_min_share", 1.5), ("routing_max_load", 0.9),
                                         ("routing_max_aux_loss", 1.0)])
def test_bad_threshold_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"fit.{field}="):
        FitSettings.from_mapping({field: value})
