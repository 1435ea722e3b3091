"""`tfbench bench data` keeps working: the smoke run end to end (structure, never timing thresholds), the
generated folder's layout, the epoch timer's count, the verdict's wording and the one-line errors."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from harness.bench.data import bench_data, bottleneck, format_bench_data, make_jpeg_tree, time_epoch
from harness.cli import main


def test_generated_folder_is_an_imagenet_layout_of_jpegs(tmp_path):
    make_jpeg_tree(tmp_path, classes=3, images=7, min_px=20, max_px=40)
    train = sorted(tmp_path.glob("train/*/*.JPEG"))
    assert len(train) == 7 and len(list(tmp_path.glob("val/*/*.JPEG"))) == 3
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["n0000", "n0001", "n0002"]
    for p in train:
        with Image.open(p) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and all(20 <= s <= 40 for s in img.size)


def test_time_epoch_counts_the_images_yielded():
    batches = [(torch.zeros(4, 3), torch.zeros(4)), (torch.zeros(3, 3), torch.zeros(3))]
    n, seconds = time_epoch(lambda: batches, torch.device("cpu"))
    assert n == 7 and seconds >= 0


def test_bottleneck_names_the_slower_side():
    assert bottleneck(300.0, 100.0).startswith("the model step") and "3.00x" in bottleneck(300.0, 100.0)
    assert bottleneck(50.0, 100.0).startswith("the loader") and "0.50x" in bottleneck(50.0, 100.0)


def test_smoke_times_ours_against_timm_and_the_step():
    res = bench_data(smoke=True, device="cpu")
    assert [r["loader"].split(",")[0].split(" ")[0] for r in res.rows] == ["ours", "ours", "timm"]
    # our loaders go over every training image (the paper protocol, no dropped batch); timm drops the last
    # partial batch of an epoch, as its training loader does
    assert res.rows[0]["images_per_epoch"] == res.rows[1]["images_per_epoch"] == res.train_images == 8
    assert res.rows[2]["images_per_epoch"] == 8 // res.batch * res.batch
    assert all(r["images_per_s"] > 0 and r["first_epoch_images_per_s"] > 0 for r in res.rows)
    assert res.step_images_per_s > 0
    text = format_bench_data(res)
    assert "SMOKE" in text and "bottleneck with the default loader" in text and "16-32 px" in text
    timm_row = next(line for line in text.splitlines() if line.startswith("| timm"))
    assert "| 1.00 " in timm_row  # timm against itself


@pytest.mark.parametrize("argv, says", [
    (["--dataset", "cifar10"], "held in memory"),
    (["--root", "/nowhere"], "--root needs --dataset"),
    (["--workers", "-1"], "--workers"),
    (["--batch", "0"], "--batch must be >= 1"),
])
def test_bad_options_are_one_line(argv, says, capsys):
    assert main(["bench", "data", "--device", "cpu", *argv]) != 0
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_passes_its_options_and_prints_the_table(monkeypatch, capsys):
    """The command line's wiring (the smoke run above is the benchmark itself, run once)."""
    import harness.bench.data as data

    got = {}
    res = data.DataBench(rows=[{"loader": "ours", "images_per_s": 50.0, "best_images_per_s": 60.0,
                                "first_epoch_images_per_s": 10.0, "images_per_epoch": 8}],
                         step_images_per_s=100.0, dataset="imagenet", train_images=8, image_size=16, batch=4,
                         workers=3, epochs=2, model="tiny_cnn", smoke=False, machine="here", seconds=1.0)
    monkeypatch.setattr(data, "bench_data", lambda **kw: got.update(kw) or res)
    assert main(["bench", "data", "--device", "cpu", "--dataset", "imagenet", "--root", "/r", "--workers", "3",
                 "--epochs", "2", "--image-size", "16"]) == 0
    assert (got["dataset"], got["root"], got["workers"], got["epochs"], got["image_size"]) == (
        "imagenet", "/r", 3, 2, 16)
    out = capsys.readouterr().out
    assert "data set imagenet" in out and "the loader (it delivers 0.50x" in out and "| n/a " in out
