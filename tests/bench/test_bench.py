"""`tfbench bench step | harness | sweep` keep working: smoke runs checked for structure and sanity (never for
timing thresholds), the benchmark step checked to be train_trial's step, and the pure helpers checked by hand."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from harness.bench.harness import bench_harness, format_bench_harness
from harness.bench.step import (
    SMOKE,
    bench_step,
    build_case,
    builtin_methods,
    cpu_peak_rss_delta,
    format_bench_step,
    run_step,
    targets,
)
from harness.bench.sweep import bench_sweep, format_bench_sweep, steady_window
from harness.cli import main

CPU = torch.device("cpu")
SMALL = dict(model_name=SMOKE["model"], num_classes=SMOKE["num_classes"], num_train=SMOKE["num_train"],
             input_size=SMOKE["input_size"], batch=4, device=CPU)


def test_builtin_methods_are_the_twelve_with_ce_first():
    assert builtin_methods() == ["ce", "bake", "byot", "cskd", "dlb", "ls", "maxsup", "ols", "pskd", "tfkd", "uskd",
                                 "zipf"]


def test_step_smoke_rows_cover_every_method_and_are_sane():
    res = bench_step(smoke=True, device="cpu", mode="latency")
    rows = {r["method"]: r for r in res.rows}
    assert [r["method"] for r in res.rows] == builtin_methods()
    ce = rows["ce"]
    assert ce["x_ce"] == 1.0 and ce["fwd_x_ce"] == 1.0
    for r in res.rows:
        assert 0 < r["fwd_ms"] < r["ms"]  # the forward is a part of the step
        assert r["x_ce"] == pytest.approx(r["ms"] / ce["ms"])
        assert r["images_per_s"] == pytest.approx(res.batch / (r["ms"] / 1e3))
        assert r["finite"]
        assert r["peak_bytes"] is None  # CPU smoke: no memory probe
    # forward passes and maps from the methods' definitions: CS-KD also runs its partners; Zipf's LS (CIFAR
    # preset: extra dense layer, dense votes) needs the maps; nobody else does
    # DLB also runs the previous batch again; USKD (its weak classifier) and BAKE (its features) need the maps
    assert {n: r["forward_passes"] for n, r in rows.items()} == {n: 2 if n in ("cskd", "dlb") else 1 for n in rows}
    assert {n for n, r in rows.items() if r["maps"]} == {"zipf", "uskd", "bake"}
    # state: PS-KD one float32 row per training image, OLS a float32 C x C matrix, the rest nothing
    c, n = SMOKE["num_classes"], SMOKE["num_train"]
    assert rows["pskd"]["state_bytes"] == n * c * 4
    assert rows["ols"]["state_bytes"] == c * c * 4
    assert rows["dlb"]["state_bytes"] == res.batch * c * 4  # the last step's logits, the next step's teacher
    assert all(rows[m]["state_bytes"] == 0 for m in ("ce", "ls", "tfkd", "cskd", "zipf", "maxsup", "uskd", "byot",
                                                     "bake"))
    assert rows["zipf"]["params"]["extra_dense_layer"] is True and rows["ls"]["params"] == {"form": "others"}
    assert [ok for _, _, ok in targets(res)] == [rows["zipf"]["x_ce"] <= 1.03,
                                                 1.7 <= rows["cskd"]["fwd_x_ce"] <= 2.3]
    table = format_bench_step(res)
    assert all(f"| {m} " in table for m in rows) and "not judged (smoke)" in table and "outside" not in table


def test_step_throughput_synchronises_once_per_window(monkeypatch):
    import harness.bench.step as step

    calls = []
    monkeypatch.setattr(step, "sync", lambda dev: calls.append(dev))
    steps = []
    real = step.run_step
    monkeypatch.setattr(step, "run_step", lambda case, **kw: (steps.append(case.name), real(case, **kw)))
    res = bench_step(smoke=True, device="cpu", methods=["zipf"], window=2)
    rounds = SMOKE["warmup"] + SMOKE["repeats"]
    assert res.mode == "throughput" and res.window == 2
    # per round and method: one synchronisation before and one after its window of 2 steps (+1 at the end);
    # plus the 2 untimed steps that build each case
    assert len(calls) == rounds * 2 * 2 + 1
    assert steps.count("zipf") == steps.count("ce") == 2 + rounds * 2
    for r in res.rows:  # a throughput step is not split into forward and backward
        assert r["fwd_ms"] is None and r["bwd_ms"] is None and r["images_per_s"] == pytest.approx(4 / (r["ms"] / 1e3))
    assert targets(res)[1][2] is None and "n/a" in format_bench_step(res)


def test_step_subset_keeps_ce_first():
    res = bench_step(smoke=True, device="cpu", methods=["zipf"])
    assert [r["method"] for r in res.rows] == ["ce", "zipf"]
    assert targets(res)[1][2] is None  # cskd not run: its target is not judged


def _count_calls(model: torch.nn.Module, name: str) -> list[int]:
    calls = [0]
    original = getattr(model, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(model, name, counted)
    return calls


@pytest.mark.parametrize("method, forwards, maps", [("ce", 1, 0), ("cskd", 2, 0), ("zipf", 0, 1), ("dlb", 2, 0),
                                                    ("byot", 0, 1)])
def test_step_runs_the_forward_passes_train_trial_runs(method, forwards, maps):
    case = build_case(method, **SMALL)
    model = case.rig.model
    plain, with_maps = _count_calls(model, "forward"), _count_calls(model, "forward_intermediates")
    run_step(case)
    assert (plain[0], with_maps[0]) == (forwards, maps)


def test_step_optimises_extra_modules_and_writes_the_pskd_table():
    case = build_case("zipf", **SMALL)
    extra = case.rig.method.extra_modules()
    before = extra.weight.detach().clone()
    run_step(case)
    assert not torch.equal(before, extra.weight)  # the extra classifier is in the optimiser

    case = build_case("pskd", **SMALL)
    with torch.no_grad():  # train mode, like the step: BN uses the batch's statistics, deterministic on CPU
        expected = torch.softmax(case.rig.model(case.x).float(), dim=1)
    run_step(case)
    assert torch.allclose(case.rig.method.table[case.idx], expected, atol=1e-6)


def test_ce_steps_on_a_fixed_batch_lower_its_loss():
    case = build_case("ce", **SMALL)
    losses = []
    for i in range(6):
        before = dict(case.sums)
        run_step(case, step=i)
        losses.append((case.sums["ce"] - before.get("ce", 0)).item() / len(case.y))
    assert losses[-1] < losses[0]


def test_step_times_the_training_loops_own_step_and_optimiser(monkeypatch):
    # the rig is the loop's (build_step_rig), its optimiser the trial's (make_optimizer under the recipe)
    from harness.config.presets import RECIPES
    from harness.train import loop

    case = build_case("zipf", **SMALL)
    assert isinstance(case.rig, loop.StepRig)
    extra = case.rig.method.extra_modules()
    (group,) = case.rig.opt.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in [*case.rig.model.parameters(), *extra.parameters()]]
    r = RECIPES["zipf"]
    assert type(case.rig.opt) is torch.optim.SGD
    assert {k: group[k] for k in ("momentum", "weight_decay", "nesterov")} == {
        k: getattr(r, k) for k in ("momentum", "weight_decay", "nesterov")}
    # a step is loop.train_step itself: a change there is what the benchmark measures
    calls = []
    original = loop.train_step
    monkeypatch.setattr(loop, "train_step", lambda **kw: calls.append(kw) or original(**kw))
    run_step(case)
    assert len(calls) == 1 and calls[0]["opt"] is case.rig.opt and calls[0]["lr"] == r.lr


def test_cpu_memory_probe_sees_the_pskd_table_and_not_its_parent():
    # 10,000 x 1,000 float32 = 40 MB of written table rows: the fresh process's RSS must grow by at least
    # that. The 512 MB held here must not leak into the child's figure (ru_maxrss would carry it over exec).
    parent = torch.ones(2**27)  # 512 MB, written, so resident
    num_train, c = 10_000, 1_000
    delta = cpu_peak_rss_delta("pskd", batch=2, threads=1, model_name="tiny_cnn", num_classes=c,
                               num_train=num_train, input_size=8)
    assert num_train * c * 4 <= delta < 4 * num_train * c * 4 < parent.numel() * 4


def test_harness_smoke_compares_train_trial_with_the_bare_loop():
    res = bench_harness(smoke=True, device="cpu")
    assert len(res.rounds) == 1 and res.steps_per_epoch == 4 and res.train_size == 40 and res.batch == 8
    r = res.rounds[0]
    assert r["harness_ips"] > 0 and r["bare_ips"] > 0
    assert res.ratio == pytest.approx(r["harness_ips"] / r["bare_ips"])
    assert r["harness_ms"] == pytest.approx(res.batch / r["harness_ips"] * 1e3)
    assert res.overhead_ms == pytest.approx(r["harness_ms"] - r["bare_ms"])
    text = format_bench_harness(res)
    assert "train_trial images/s" in text and "not judged (smoke)" in text


def test_steady_window_from_the_trial_files(tmp_path: Path):
    # two trials: started at t=100 and t=104, finished at t=110 and t=107 -> window 110 - 100 = 10 s
    for name, start, end, wall in (("a", 100.0, 110.0, 9.5), ("b", 104.0, 107.0, 2.5)):
        d = tmp_path / "trials" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "result.json").write_text(json.dumps({"wall_time_s": wall}))
        os.utime(d / "config.json", (start, start))
        os.utime(d / "result.json", (end, end))
    first, last, walls = steady_window(tmp_path)
    assert (first, last) == (pytest.approx(100.0), pytest.approx(110.0)) and sorted(walls) == [2.5, 9.5]


@pytest.mark.slow
def test_sweep_smoke_runs_both_concurrency_levels_through_ray():
    res = bench_sweep(smoke=True)
    assert [r["concurrent"] for r in res.rows] == [1, 2] and res.ray_init_s is None
    for r in res.rows:
        assert r["trials"] == 2 and 0 < r["steady_s"] <= r["wall_s"]
        assert r["startup_s"] > 0 and r["wrapup_s"] > 0
        assert r["startup_s"] + r["steady_s"] + r["wrapup_s"] == pytest.approx(r["wall_s"])
        assert r["tph_e2e"] == pytest.approx(2 / r["wall_s"] * 3600)
        assert r["tph_steady"] == pytest.approx(2 / r["steady_s"] * 3600)
    assert res.speedup_steady == pytest.approx(res.rows[1]["tph_steady"] / res.rows[0]["tph_steady"])
    assert res.speedup_e2e == pytest.approx(res.rows[1]["tph_e2e"] / res.rows[0]["tph_e2e"])
    assert "smoke: not judged" in format_bench_sweep(res)


def test_cli_bench_targets_smoke_and_bad_input(capsys):
    assert main(["bench", "step", "--smoke", "--device", "cpu", "--method", "ls"]) == 0
    out = capsys.readouterr().out
    assert "| ls " in out and "| ce " in out and "1 torch thread" in out
    assert main(["bench", "harness", "--smoke", "--device", "cpu"]) == 0
    assert "bare loop images/s" in capsys.readouterr().out
    for argv, expected in ((["bench", "step", "--repeats", "0"], "--repeats must be >= 1"),
                           (["bench", "step", "--smoke", "--method", "nosuch"], "unknown method 'nosuch'"),
                           (["bench", "harness", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
                           (["bench", "sweep", "--method", "nosuch"], "unknown method 'nosuch'"),
                           (["bench", "sweep", "--concurrent", "0", "2"], "must be >= 1"),
                           (["bench", "harness", "--device", "gpu"], "allowed: auto, cpu, cuda, cuda:N")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        assert main(["bench", "step", "--device", "cuda"]) == 2
        assert "no CUDA device is visible" in capsys.readouterr().err


def test_gpu_check_script_runs_in_smoke_form_on_cpu(tmp_path, capsys):
    # the GPU check itself needs CUDA; this runs its code path on a tiny model so that it cannot rot
    from harness.bench.gpu import run

    # 4 x 32 = 128 training images: one whole batch of 128 (training drops a partial batch, and refuses a split
    # smaller than one batch)
    small = dict(num_classes=4, num_superclasses=2, image_size=16, train_per_class=32, val_per_class=2,
                 crop_padding=4, flip=True)
    report = run(steps=2, epochs=1, workers=0, out=tmp_path, device="cpu", dataset_params=small, model="tiny_cnn",
                 methods=("ce", "zipf"), modes=("eager",), loss_repeats=2)
    rows = report["steps"]
    assert [(r["method"], r["path"].split()[0]) for r in rows] == [("ce", "fast"), ("zipf", "fast"),
                                                                     ("ce", "DataLoader"), ("zipf", "DataLoader")]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert [r["vs_ce"] for r in rows if r["method"] == "ce"] == [1.0, 1.0]
    assert [(r["loss"], r["mode"]) for r in report["losses"]] == [("ce", "eager"), ("zipf", "eager")]
    assert all(r["ms"] > 0 for r in report["losses"]) and report["losses"][0]["vs_ce"] == 1.0
    md = (tmp_path / "bench_gpu.md").read_text()
    assert "not checked (no CUDA device)" in md and "The losses alone" in md
    assert json.loads((tmp_path / "bench_gpu.json").read_text())["steps"][0]["method"] == "ce"
