"""Live curves: TensorBoard event files and, where mlflow is installed, an MLflow run per trial."""
import pytest

from harness.sweep.live import check_mlflow, live_report


def test_mlflow_sqlite_store_gets_one_run_per_trial_with_params_and_metrics(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = check_mlflow(tmp_path / "mlruns")
    reported = []
    for _ in range(2):  # a resumed trial reuses its run
        report = live_report(reported.append, tmp_path / "trial", "ce-digits-s0-abc", {"lam": 0.1}, uri)
        report({"epoch": 1, "val_top1": 0.5, "train_loss": 2.0})
    report({"epoch": 2, "val_top1": 0.75, "train_loss": 1.0})
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tfbench")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].data.params == {"lam": "0.1"}
    history = client.get_metric_history(runs[0].info.run_id, "val_top1")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (1, 0.5), (2, 0.75)]
    assert len(reported) == 3 and (tmp_path / "trial" / "tb").is_dir()
