"""Loss landscapes: filter-normalised directions, exact restore, resumable grids, sharpness, shared contour levels.

Expected values come from independent computations: numpy norms, F.cross_entropy on the whole data set,
a model copy perturbed by hand, and a closed-form loss for a constructed quadratic minimum.
"""
from __future__ import annotations

import argparse
import copy
import csv
import math
import re
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import read_csv
from matplotlib.contour import ContourSet
from torch import nn

from harness.analysis import landscape as L
from harness.analysis import landscape_plots as LP
from harness.errors import UserError


class ToyData(torch.utils.data.Dataset):
    """Items (img, label, idx) like the bundles' train_eval."""

    def __init__(self, n: int = 40, classes: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 6, 6, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), i


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    with torch.no_grad():  # non-trivial BN statistics and affine parameters, as after training
        net(torch.randn(16, 1, 6, 6) * 2 + 0.5)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net.eval()


def full_loss(model: nn.Module, data: ToyData, shift: list[torch.Tensor] | None = None) -> float:
    """Cross-entropy over the whole data set in one call, on a copy of the model moved by `shift` by hand."""
    m = copy.deepcopy(model).eval()
    if shift is not None:
        with torch.no_grad():
            for p, s in zip(m.parameters(), shift, strict=True):
                p.add_(s)
    with torch.no_grad():
        return float(F.cross_entropy(m(data.x), data.y))


# --- directions ---------------------------------------------------------------------------------

def test_filter_normalisation_matches_weight_filter_norms_and_zeroes_1d():
    model = tiny_net()
    d = L.random_direction(model, seed=3)
    checked = 0
    for (name, p), t in zip(model.named_parameters(), d, strict=True):
        w, v = p.detach().numpy(), t.numpy()
        assert v.shape == w.shape
        if w.ndim == 1:
            assert not v.any(), name  # biases and BN parameters stay put by default
            continue
        w_norms = np.linalg.norm(w.reshape(len(w), -1), axis=1)
        d_norms = np.linalg.norm(v.reshape(len(v), -1), axis=1)
        np.testing.assert_allclose(d_norms, w_norms, rtol=1e-5)
        checked += 1
    assert checked == 3  # two convs and the linear layer

    d_all = L.random_direction(model, seed=3, ignore_1d=False)
    for p, t, t_ignored in zip(model.parameters(), d_all, d, strict=True):
        if p.dim() == 1:  # Li et al. without 'biasbn': the parameter itself
            assert torch.equal(t, p.detach())
        else:  # the multi-dimensional part does not depend on the 1-D option
            assert torch.equal(t, t_ignored)


def test_same_seed_same_directions_and_other_seed_differs():
    a, b = tiny_net(0), tiny_net(0)
    da, db = L.random_direction(a, seed=7), L.random_direction(b, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(da, db, strict=True))
    dc = L.random_direction(a, seed=8)
    assert not torch.allclose(da[0], dc[0])
    # a differently trained model of the same shape: same unit directions per filter, its own filter norms
    other = tiny_net(5)
    do = L.random_direction(other, seed=7)
    for x, y, p in zip(da, do, other.parameters(), strict=True):
        if p.dim() > 1:
            ux = x.reshape(len(x), -1) / x.reshape(len(x), -1).norm(dim=1, keepdim=True)
            uy = y.reshape(len(y), -1) / y.reshape(len(y), -1).norm(dim=1, keepdim=True)
            torch.testing.assert_close(ux, uy)
            assert not torch.allclose(x, y)
    # a pair drawn together: the first equals the single draw, the second differs from it
    d1, d2 = L.random_directions(a, seed=7, n=2)
    assert all(torch.equal(x, y) for x, y in zip(d1, da, strict=True))
    assert not torch.allclose(d1[0], d2[0])


def test_save_directions_round_trip(tmp_path):
    model = tiny_net()
    dirs = L.random_directions(model, seed=1, n=2)
    L.save_directions(tmp_path / "d.pt", dirs, model=model, seed=1, ignore_1d=True)
    saved = torch.load(tmp_path / "d.pt", weights_only=False)
    assert saved["seed"] == 1 and saved["names"][0] == "0.weight"
    assert torch.equal(saved["directions"][1][0], dirs[1][0])


# --- evaluation and curves ----------------------------------------------------------------------

def test_subset_is_fixed_by_seed_and_batched():
    data = ToyData(40)
    a = L.subset_batches(data, n=24, seed=0, batch_size=7)
    b = L.subset_batches(data, n=24, seed=0, batch_size=7)
    c = L.subset_batches(data, n=24, seed=1, batch_size=7)
    assert [len(y) for _, y in a] == [7, 7, 7, 3]
    xa, xb, xc = (torch.cat([x for x, _ in s]) for s in (a, b, c))
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    # 24 distinct images of the data set
    rows = {tuple(x.flatten().tolist()) for x in xa}
    assert len(rows) == 24 and rows <= {tuple(x.flatten().tolist()) for x in data.x}


def test_curve_centre_is_the_models_own_loss_and_points_move_the_weights():
    data = ToyData(40)
    model = tiny_net()
    batches = L.subset_batches(data, n=1000, seed=0, batch_size=16)  # the whole set, shuffled, 3 batches
    d = L.random_direction(model, seed=2)
    curve = L.curve_1d(model, d, [-0.5, 0.0, 1.0], batches)
    assert math.isclose(curve["loss"][1], full_loss(model, data), rel_tol=1e-5)
    assert math.isclose(curve["loss"][2], full_loss(model, data, shift=d), rel_tol=1e-5)
    assert math.isclose(curve["loss"][0], full_loss(model, data, shift=[-0.5 * t for t in d]), rel_tol=1e-5)
    with torch.no_grad():
        expected_acc = int((model(data.x).argmax(1) == data.y).sum()) / len(data)
    assert math.isclose(curve["acc"][1], expected_acc)


# --- grids --------------------------------------------------------------------------------------

def _setup():
    data = ToyData(30)
    model = tiny_net()
    batches = L.subset_batches(data, n=30, seed=0, batch_size=16)
    d1, d2 = L.random_directions(model, seed=0, n=2)
    return data, model, batches, d1, d2


def test_weights_and_buffers_restored_exactly_after_a_grid_even_when_interrupted(tmp_path):
    _, model, batches, d1, d2 = _setup()
    model.train()  # the caller's mode is given back; evaluation itself runs in eval mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    L.grid_2d(model, d1, d2, L.axis(1.0, 3), L.axis(1.0, 3), batches, tmp_path / "g.npz")

    def boom(done, total):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        L.grid_2d(model, d1, d2, L.axis(0.7, 3), L.axis(0.7, 3), batches, tmp_path / "h.npz", on_row=boom)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert model.training


def test_grid_5x5_resumed_after_interruption_equals_uninterrupted(tmp_path):
    data, model, batches, d1, d2 = _setup()
    xs, ys = L.axis(1.0, 5), L.axis(0.5, 5)
    full = L.grid_2d(model, d1, d2, xs, ys, batches, tmp_path / "full.npz", seed=0)
    assert full.complete and full.loss.shape == (5, 5)
    # orientation: loss[i, j] is at x = xs[j] along d1 and y = ys[i] along d2 (checked on a hand-moved copy)
    shift = [xs[4] * a + ys[1] * b for a, b in zip(d1, d2, strict=True)]
    assert math.isclose(full.loss[1, 4], full_loss(model, data, shift=shift), rel_tol=1e-5)
    assert math.isclose(full.loss[2, 2], full_loss(model, data), rel_tol=1e-5)

    part = L.grid_2d(model, d1, d2, xs, ys, batches, tmp_path / "part.npz", seed=0, max_rows=2)
    assert part.rows_done == 2 and not part.complete
    on_disk = L.load_grid(tmp_path / "part.npz")
    assert on_disk.rows_done == 2 and np.isnan(on_disk.loss[2:]).all()

    rows_seen = []
    resumed = L.grid_2d(model, d1, d2, xs, ys, batches, tmp_path / "part.npz", seed=0,
                        on_row=lambda done, total: rows_seen.append(done))
    assert rows_seen == [3, 4, 5]  # only the missing rows were computed
    assert np.array_equal(resumed.loss, full.loss) and np.array_equal(resumed.acc, full.acc)

    # the same after a crash raised from the progress callback in row 2
    def crash(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        L.grid_2d(model, d1, d2, xs, ys, batches, tmp_path / "crash.npz", seed=0, on_row=crash)
    assert L.load_grid(tmp_path / "crash.npz").rows_done == 2
    again = L.grid_2d(model, d1, d2, xs, ys, batches, tmp_path / "crash.npz", seed=0)
    assert np.array_equal(again.loss, full.loss)


def test_grid_file_for_other_coordinates_or_directions_starts_over(tmp_path):
    _, model, batches, d1, d2 = _setup()
    xs = L.axis(1.0, 3)
    path = tmp_path / "g.npz"
    L.grid_2d(model, d1, d2, xs, xs, batches, path, seed=0, max_rows=1)
    reference = L.grid_2d(model, d1, d2, xs, xs, batches, tmp_path / "ref.npz", seed=0)
    e1, e2 = L.random_directions(model, seed=9, n=2)
    with pytest.warns(UserWarning, match="from the start"):
        other = L.grid_2d(model, e1, e2, xs, xs, batches, path, seed=9)
    assert other.complete and not np.array_equal(other.loss, reference.loss)
    with pytest.warns(UserWarning, match="from the start"):
        wider = L.grid_2d(model, d1, d2, L.axis(2.0, 3), xs, batches, path, seed=0)
    assert wider.complete and wider.loss[1, 1] == reference.loss[1, 1]


# --- sharpness ----------------------------------------------------------------------------------

class Bowl(nn.Module):
    """Logits [a - s*||W - c||^2, 0] for every input: with label 0, loss = log(1 + exp(s*q - a)), q = ||W - c||^2.

    The trained point W = c is a minimum; a filter-normalised step of radius r along any direction gives
    q = r^2 * ||c||^2 (W has one filter), so the sharpness has the closed form below.
    """

    def __init__(self, c: torch.Tensor, s: float, a: float):
        super().__init__()
        self.weight = nn.Parameter(c.clone())              # (1, m): one filter
        self.bias = nn.Parameter(torch.tensor([0.3]))       # 1-D: must not move
        self.register_buffer("c", c.clone())
        self.s, self.a = s, a

    def forward(self, x):
        q = (self.weight - self.c).square().sum() + 0 * self.bias.sum()
        logit0 = self.a - self.s * q
        return torch.stack([logit0, torch.zeros_like(logit0)]).expand(len(x), 2)


def test_sharpness_is_zero_at_radius_zero_and_matches_a_constructed_quadratic_minimum():
    data = ToyData(20)
    model = tiny_net()
    batches = L.subset_batches(data, n=20, seed=0, batch_size=8)
    assert L.sharpness(model, batches, radius=0.0, k=3, seed=0) == (0.0, 0.0)

    c = torch.tensor([[0.6, -0.8, 0.5, 1.0]], dtype=torch.float64)
    x = [(torch.zeros(6, 1), torch.zeros(6, dtype=torch.long))]
    r, a = 0.5, 1.0
    q = r ** 2 * float(c.square().sum())
    for s in (1.0, 8.0):
        bowl = Bowl(c, s=s, a=a).double()
        mean, std = L.sharpness(bowl, x, radius=r, k=4, seed=1)
        expected = math.log1p(math.exp(s * q - a)) - math.log1p(math.exp(-a))
        assert math.isclose(mean, expected, rel_tol=1e-9)
        assert std < 1e-9 and mean > 0
    flat, _ = L.sharpness(Bowl(c, s=1.0, a=a).double(), x, radius=r, k=2, seed=0)
    sharp, _ = L.sharpness(Bowl(c, s=8.0, a=a).double(), x, radius=r, k=2, seed=0)
    assert sharp > flat


# --- figures ------------------------------------------------------------------------------------

def _bowl_grid(curv: float) -> dict:
    xs = np.linspace(-1, 1, 7)
    X, Y = np.meshgrid(xs, xs)
    return {"xs": xs, "ys": xs, "loss": 0.05 + curv * (X ** 2 + Y ** 2)}


def test_contour_panels_share_levels_colour_limits_and_one_colorbar():
    grids = {"ce": _bowl_grid(4.0), "ls": _bowl_grid(1.0), "zipf": _bowl_grid(0.3)}
    fig = LP.contour_panels(grids)
    panels = [ax for ax in fig.axes if any(isinstance(c, ContourSet) for c in ax.collections)]
    assert [ax.get_title() for ax in panels] == ["ce", "ls", "zipf"]
    assert len(fig.axes) == len(panels) + 1  # exactly one colorbar for all panels
    filled = [[c for c in ax.collections if isinstance(c, ContourSet) and c.filled][0] for ax in panels]
    for cs in filled[1:]:
        np.testing.assert_array_equal(cs.levels, filled[0].levels)
        assert cs.get_clim() == filled[0].get_clim()
    # the levels cover every panel's values: lowest minimum to highest maximum
    assert math.isclose(filled[0].levels[0], 0.05) and math.isclose(filled[0].levels[-1], 0.05 + 4.0 * 2)


def test_curves_and_surface_figures_have_one_series_per_method():
    curves = {m: {"alphas": np.linspace(-1, 1, 5), "loss": np.linspace(1, 2, 5), "acc": np.full(5, 0.9)}
              for m in ("ce", "zipf")}
    fig = LP.curves_1d(curves)
    loss_ax, acc_ax = fig.axes[:2]
    assert [ln.get_label() for ln in loss_ax.get_lines() if not ln.get_label().startswith("_")] == ["ce", "zipf"]
    assert np.allclose(acc_ax.get_lines()[0].get_ydata(), 90.0)
    surf = LP.surface_3d({"ce": _bowl_grid(4.0), "zipf": _bowl_grid(0.3)})
    z3d = [ax for ax in surf.axes if ax.name == "3d"]
    assert len(z3d) == 2 and z3d[0].get_zlim() == z3d[1].get_zlim()


# --- the command --------------------------------------------------------------------------------

def _fake_results(tmp_path, monkeypatch):
    """A results folder whose trials load as tiny nets (the training loop is tested elsewhere)."""
    import harness.train.trained
    from harness.cli import landscape as cmd_landscape

    res = tmp_path / "results" / "toy"
    rows = [("ce-s0", "finished", "ce", 0), ("ce-s1", "finished", "ce", 1), ("zipf-s0", "finished", "zipf", 0),
            ("zipf-s1", "failed", "zipf", 1)]
    res.mkdir(parents=True)
    with open(res / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "status", "error", "method", "dataset", "model", "seed", "epochs", "p.lam"])
        for key, status, method, seed in rows:
            w.writerow([key, status, "", method, "toy", "tiny", seed, 1, "0.1" if method == "zipf" else ""])
            (res / "trials" / key).mkdir(parents=True)
            (res / "trials" / key / "checkpoint.pt").write_bytes(b"")
    data = ToyData(24)
    seeds = {"ce-s0": 0, "ce-s1": 1, "zipf-s0": 2, "zipf-s1": 3}

    def fake_load(trial_dir, device="cpu"):
        return types.SimpleNamespace(model=tiny_net(seeds[trial_dir.name]),
                                     spec=types.SimpleNamespace(dataset="toy", dataset_params={}),
                                     bundle=types.SimpleNamespace(train_eval=data))

    monkeypatch.setattr(harness.train.trained, "load_trained", fake_load)
    monkeypatch.setattr(cmd_landscape, "environment", lambda device=None: {"device": device})  # skips ray import
    parser = argparse.ArgumentParser()
    cmd_landscape.add_arguments(parser)
    return res, parser, cmd_landscape


def test_command_writes_grids_figures_and_sharpness_table(tmp_path, monkeypatch, capsys):
    res, parser, cmd = _fake_results(tmp_path, monkeypatch)
    args = parser.parse_args([str(res), "--methods", "ce,zipf", "--grid", "3", "--k", "2", "--subset", "16",
                              "--device", "cpu"])
    assert cmd.run(args) == 0
    out = res / "landscape"
    for name in ("contour_toy_tiny.png", "contour_toy_tiny.pdf", "curves_toy_tiny.png", "sharpness.md",
                 "ce-s0/grid.npz", "ce-s0/directions.pt", "zipf-s0/curve.npz"):
        assert (out / name).exists(), name
    assert not (out / "ce-s1" / "grid.npz").exists()  # grids for the first seed only
    rows = read_csv(out / "sharpness.csv")
    assert [r["key"] for r in rows] == ["ce-s0", "ce-s1", "zipf-s0"]  # the failed trial is skipped
    assert list(rows[0])[:7] == ["key", "method", "dataset", "model", "seed", "sharpness", "sharpness_std"]
    ce = np.array([float(r["sharpness"]) for r in rows if r["method"] == "ce"])
    md = (out / "sharpness.md").read_text()
    # the summary's sharpness table: CE's cell is numpy's mean +- sample std, to the decimals it prints
    cell = re.search(r"\| CE +\| +\**(-?\d+\.(\d+)) \+- (\d+\.\d+)", md)
    assert cell, md
    tol = 0.5 * 10 ** -len(cell.group(2)) + 1e-12
    assert abs(float(cell.group(1)) - ce.mean()) <= tol and abs(float(cell.group(3)) - ce.std(ddof=1)) <= tol
    assert re.search(r"\| Zipf's LS +\| +-?\d+\.\d+ \+- n/a \(n=1\)", md)
    assert "grid row 3/3" in capsys.readouterr().out  # progress lines
    grid = L.load_grid(out / "ce-s0" / "grid.npz")
    assert grid.complete and grid.loss.shape == (3, 3)
    # a second run resumes the finished grids (the file is not rewritten) and gives the same numbers
    stamp = (out / "ce-s0" / "grid.npz").stat().st_mtime_ns
    assert cmd.run(args) == 0
    assert (out / "ce-s0" / "grid.npz").stat().st_mtime_ns == stamp
    assert "3 grid rows resumed" in capsys.readouterr().out
    assert [r["sharpness"] for r in read_csv(out / "sharpness.csv")] == [r["sharpness"] for r in rows]


def test_command_user_errors_are_one_line(tmp_path, monkeypatch):
    res, parser, cmd = _fake_results(tmp_path, monkeypatch)
    with pytest.raises(UserError, match="no finished trial with method 'zipff'.*did you mean 'zipf'"):
        cmd.run(parser.parse_args([str(res), "--methods", "ce,zipff"]))
    with pytest.raises(UserError, match="no trials.csv"):
        cmd.run(parser.parse_args([str(tmp_path)]))
    with pytest.raises(UserError, match="--seeds"):
        cmd.run(parser.parse_args([str(res), "--seeds", "first"]))
    with pytest.raises(UserError) as e:
        cmd.run(parser.parse_args([str(res), "--grid", "1"]))
    assert "\n" not in str(e.value)
