"""Per-image predictions end to end: the loop writes predictions.npz; result.json's top-1, ECE and AURC equal
a recomputation from the file by hand; `tfbench evaluate` fills a folder trained before predictions existed
(corruptions and an OOD set included) without retraining; accuracy falls with the corruption's severity."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import quick_trial, read_csv

from harness.cli import main
from harness.config.schema import Evaluate
from harness.folders import ResultsFolder
from harness.results import records
from harness.results.predictions import read_predictions
from harness.sweep.evaluate import evaluate_trial
from harness.train.loop import train_trial

BEYOND = ("selected_aurc", "selected_ece_ts", "selected_nll_ts", "temperature", "repr_within_ratio")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = quick_trial("ls", epochs=2, steps=10)
    out = tmp_path_factory.mktemp("beyond") / "sweep" / "trials" / spec.key()
    train_trial(spec, out, log=lambda _: None)
    return spec, out


def test_the_loop_keeps_predictions_of_the_selected_and_last_epochs(trained):
    _, out = trained
    p = read_predictions(out)
    assert p["test_logits"].dtype == np.float16 and p["test_targets"].dtype == np.int64
    assert p["test_logits"].shape == (len(p["test_targets"]), 20)
    for key in ("val_logits", "last_test_logits", "last_val_logits", "test_feature_sums"):
        assert key in p


def test_record_metrics_equal_a_recomputation_from_the_file(trained):
    _, out = trained
    evaluate_trial(out, Evaluate(), device="cpu", log=lambda _: None)
    r = json.loads((out / "result.json").read_text())
    p = read_predictions(out)
    y, conf, pred = p["test_targets"], p["test_msp"].astype(np.float64), p["test_pred"]
    correct = pred == y
    assert r["selected_top1"] == correct.mean()
    edges = np.arange(16) / 15
    ece = sum(abs(correct[m].sum() - conf[m].sum()) for m in
              ((conf > edges[k]) & (conf <= edges[k + 1]) for k in range(15))) / len(y)
    assert r["selected_ece"] == pytest.approx(ece, abs=1e-9)
    order = np.argsort(-conf, kind="stable")
    risks = np.cumsum(~correct[order]) / np.arange(1, len(y) + 1)
    assert r["selected_aurc"] == pytest.approx(risks.mean(), abs=1e-12)
    assert all(k in r for k in BEYOND)


def test_evaluate_fills_a_folder_trained_before_without_retraining(trained, tmp_path):
    spec, out = trained
    folder = tmp_path / "old"
    trial = folder / "trials" / spec.key()
    shutil.copytree(out, trial)
    (trial / "predictions.npz").unlink()
    before = json.loads((trial / "result.json").read_text())
    old = {k: v for k, v in before.items() if k in {"selected_top1", "selected_ece", "last_top1"}}
    (trial / "result.json").write_text(json.dumps({k: v for k, v in before.items() if k not in BEYOND}))
    ResultsFolder(folder).mark()
    records.write_trials_csv(folder, [(spec.key(), spec.to_dict())])
    weights = {n: (trial / n).stat().st_mtime_ns for n in ("checkpoint.pt", "best.pt", "metrics.jsonl")}

    assert main(["evaluate", str(folder), "--corruptions", "gaussian_noise,contrast", "--corruption-images",
                 "200", "--ood", "synthetic", "--ood-param", "seed=7", "--device", "cpu"]) == 0
    after = json.loads((trial / "result.json").read_text())
    assert {n: (trial / n).stat().st_mtime_ns for n in weights} == weights  # nothing trained again
    assert {k: after[k] for k in old} == old
    for k in BEYOND:
        assert after[k] == pytest.approx(before[k], rel=1e-6)
    assert 0 <= after["ood_auroc"] <= 1 and 0 <= after["corrupt_top1"] <= 1
    p = read_predictions(trial)
    assert p["corruption_correct"].shape == (2, 5, 200)
    assert float(read_csv(folder / "trials.csv")[0]["corrupt_top1"]) == after["corrupt_top1"]
    assert "Beyond top-1" in (folder / "summary.md").read_text()
    assert (folder / "plots" / "reliability_synthetic_tiny_cnn.png").exists()
    assert (folder / "plots" / "risk_coverage_synthetic_tiny_cnn.png").exists()

    # accuracy falls with severity: the clean subset above the mean of severity 5 over the two corruptions
    clean = (p["test_pred"][:200] == p["test_targets"][:200]).mean()
    by_severity = p["corruption_correct"].mean(axis=(0, 2))
    assert by_severity[4] < clean and by_severity[4] < by_severity[0]


def test_a_sweep_file_names_corruptions_and_an_ood_set(tmp_path):
    from harness.config.sweep_file import SweepError, load_sweep

    text = ("schema_version: 1\nname: ev\nmethods: [ce]\ndatasets: [synthetic]\nmodels: [tiny_cnn]\n"
            "evaluate: {corruptions: all, ood: {name: synthetic, params: {seed: 3}}}\n")
    (tmp_path / "ok.yaml").write_text(text)
    assert load_sweep(tmp_path / "ok.yaml").raw["evaluate"]["corruptions"] == "all"
    (tmp_path / "bad.yaml").write_text(text.replace("corruptions: all", "corruptions: [fog]"))
    with pytest.raises(SweepError, match="evaluate"):
        load_sweep(tmp_path / "bad.yaml")
