"""The small integrity items: the cluster a sweep attached to is named, a sweep name reused by another file
is warned about, figures of an earlier run do not linger beside new ones, TensorBoard writers are closed."""
from __future__ import annotations

import textwrap

import harness.sweep.runner as runner
from harness.config.sweep_file import load_sweep
from harness.sweep.cluster import describe_cluster


def test_the_attached_cluster_is_named_with_its_nodes_and_resources():
    nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 0.0}]
    assert describe_cluster("10.0.0.1:6379", nodes) == ("attached to the Ray cluster at 10.0.0.1:6379: 2 node(s), "
                                                        "12 CPU, 1 GPU")


def write(path, name):
    path.write_text(textwrap.dedent(f"""\
        schema_version: 1
        name: {name}
        methods: [ce]
        datasets: [digits]
        models: [tiny_cnn]
        train: {{epochs: 1}}
        """))
    return path


def test_a_sweep_name_reused_by_another_file_is_warned_about(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: False)  # no training: only the folder's bookkeeping
    results = tmp_path / "results"
    a, b = write(tmp_path / "a.yaml", "shared"), write(tmp_path / "b.yaml", "shared")
    runner.run_sweep(load_sweep(a), results, progress=False)
    assert "was last written by" not in capsys.readouterr().err
    runner.run_sweep(load_sweep(a), results, progress=False)   # the same file again: no warning
    assert "was last written by" not in capsys.readouterr().err
    runner.run_sweep(load_sweep(b), results, progress=False)
    err = capsys.readouterr().err
    assert f"was last written by {a.resolve()}; this run of {b}" in err
    assert sum("was last written by" in line for line in err.splitlines()) == 1


def test_figures_of_an_earlier_run_are_removed(tmp_path):
    """plots/ holds one sweep's figures: a PNG left by an earlier configuration goes; other files stay."""
    import json

    import pandas as pd

    from harness.results.plots import write_plots
    rows = []
    for m, v in (("ce", 0.8), ("ls", 0.82)):
        for s in (0, 1):
            key = f"{m}-digits-s{s}-0123456789"
            rows.append({"key": key, "status": "finished", "method": m, "dataset": "digits", "model": "tiny_cnn",
                         "seed": s, "epochs": 2, "protocol": "clean", "select": "top1", "selected_top1": v,
                         "last_top1": v, "val_selected_top1": 0.9, "step_time_s": 0.01, "selected_epoch": 2})
            t = tmp_path / "trials" / key
            t.mkdir(parents=True)
            (t / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_top1": 0.5, "train_loss": 1.0,
                                                                 "train_ce": 1.0}) + "\n" for e in (1, 2)))
    pd.DataFrame(rows).to_csv(tmp_path / "trials.csv", index=False)
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "learning_cifar100_resnet18.png").write_bytes(b"an old figure")
    (plots / "notes.txt").write_text("mine")
    written = write_plots(tmp_path)
    assert written and not (plots / "learning_cifar100_resnet18.png").exists()
    assert (plots / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in plots.glob("*.png")) == sorted(p.name for p in written if p.suffix == ".png")
