"""Loss landscapes of trained models (Li et al., NeurIPS 2018, "Visualizing the loss landscape of neural nets").

The model's weights w are moved along random directions d that are *filter-normalised*: each output filter
(the slice d[i] of a parameter along dim 0: a conv kernel, a row of a linear layer) is rescaled to the
Frobenius norm of the matching weight filter w[i]. Step sizes are therefore relative: at alpha = 1 every
filter has moved by a vector as long as the filter itself, whatever the layer's scale, so landscapes of
differently trained (differently scaled) models can be compared on one axis. That is the point of Li et al.:
without it, a network with large weights looks flat only because a fixed step is small relative to it.

Parameters with one dimension (biases, batch-norm scales and shifts) are left where they are by default
(their direction is zero; Li et al.'s `--xignore biasbn`). With `ignore_1d=False` their direction is the
parameter itself, as Li et al.'s code does when biasbn is not ignored (a 1-D "filter" is one scalar, so
filter normalisation would only keep a random sign). Buffers (batch-norm running statistics) are never
perturbed: they stay as trained, and the model is evaluated in eval mode so they are used, not updated.

Everything here is a function of (model, directions, batches); files are written only by `grid_2d` (its
resumable .npz) and `save_directions`.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.io import atomic_torch_save, atomic_write_bytes

Direction = list[Tensor]  # one tensor per model parameter, in `model.parameters()` order
Batches = Sequence[tuple[Tensor, Tensor]]  # (x (B, ...), y (B,)) on the model's device


# --- directions ---------------------------------------------------------------------------------

def random_directions(model: nn.Module, *, seed: int, n: int, ignore_1d: bool = True) -> list[Direction]:
    """`n` filter-normalised Gaussian directions drawn one after another from one CPU generator.

    The draws depend only on `seed` and the parameter shapes (a CPU generator gives the same numbers on
    every machine and device), so two models of the same architecture are probed along the same random
    unit directions, each rescaled to its own filter norms. Gaussian numbers are drawn for 1-D parameters
    too, ignored or not, so the >1-D parts of a direction do not depend on `ignore_1d`.
    """
    stream = _direction_stream([p.detach() for p in model.parameters()], seed=seed, ignore_1d=ignore_1d)
    return [next(stream) for _ in range(n)]


def random_direction(model: nn.Module, *, seed: int, ignore_1d: bool = True) -> Direction:
    """One filter-normalised Gaussian direction (the first of `random_directions(seed=seed)`)."""
    return random_directions(model, seed=seed, n=1, ignore_1d=ignore_1d)[0]


def _direction_stream(weights: Sequence[Tensor], *, seed: int, ignore_1d: bool) -> Iterator[Direction]:
    """The directions of `random_directions(seed=seed, n=...)`, one at a time (one held in memory).

    Each is normalised against `weights` as they are when it is drawn (lazily), so callers that move the
    model between draws must pass a copy of the trained weights.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    while True:
        yield [_filter_normalise(torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.device, w.dtype),
                                 w, ignore_1d) for w in weights]


def _filter_normalise(d: Tensor, w: Tensor, ignore_1d: bool) -> Tensor:
    if w.dim() <= 1:
        return torch.zeros_like(w) if ignore_1d else w.clone()
    d_flat, w_flat = d.reshape(len(d), -1), w.reshape(len(w), -1)          # (filters, fan_in)
    scale = w_flat.norm(dim=1, keepdim=True) / (d_flat.norm(dim=1, keepdim=True) + 1e-10)
    return (d_flat * scale).reshape(d.shape)


def direction_fingerprint(*directions: Direction) -> np.ndarray:
    """(sum, sum of squares) per direction in float64: a cheap check that a saved grid used these directions."""
    out = []
    for d in directions:
        out += [sum(float(t.double().sum()) for t in d), sum(float(t.double().square().sum()) for t in d)]
    return np.asarray(out, dtype=np.float64)


def save_directions(path: str | Path, directions: Sequence[Direction], *, model: nn.Module, seed: int,
                    ignore_1d: bool) -> None:
    """Write the directions (on CPU) with the parameter names and how they were built, atomically."""
    names = [name for name, _ in model.named_parameters()]
    atomic_torch_save(path, {"seed": int(seed), "ignore_1d": bool(ignore_1d), "names": names,
                             "directions": [[t.detach().cpu() for t in d] for d in directions]})


# --- evaluation ---------------------------------------------------------------------------------

def subset_batches(dataset: Any, *, n: int = 2048, seed: int = 0, batch_size: int = 512,
                   device: str | torch.device = "cpu") -> list[tuple[Tensor, Tensor]]:
    """A fixed subset of `dataset` (items (img, label, ...)): the first `n` of a seeded permutation, batched.

    The dataset must be the training set *without* augmentation (the bundle's `train_eval`), so the loss at
    a point is a deterministic number and every method is scored on the same images.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    idx = torch.randperm(len(dataset), generator=gen)[: min(n, len(dataset))].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=batch_size,
                                         shuffle=False, num_workers=0)
    return [(batch[0].to(device), torch.as_tensor(batch[1]).long().to(device)) for batch in loader]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def eval_loss_acc(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """Mean plain cross-entropy and top-1 accuracy (a fraction) over all samples, in eval mode, no grad."""
    total, correct, n = 0.0, 0, 0
    with _eval_mode(model):
        for x, y in batches:
            logits = model(x)                                                # (B, C)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float, keep double
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return total / n, correct / n


@contextmanager
def _perturbable(model: nn.Module) -> Iterator[Callable[[Sequence[tuple[float, Direction]]], None]]:
    """Yield `move([(a, d1), (b, d2)])` that sets w = w0 + a*d1 + b*d2; w0 is restored exactly on exit.

    Each point is computed from the kept copy w0 (not by stepping from the previous point), so results do
    not depend on the order points are visited and no rounding error accumulates.
    """
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]

    def move(steps: Sequence[tuple[float, Direction]]) -> None:
        if any(len(d) != len(params) for _, d in steps):
            raise ValueError(f"a direction must have one tensor per parameter ({len(params)})")
        with torch.no_grad():
            for i, (p, w0) in enumerate(zip(params, originals, strict=True)):
                w = w0
                for coef, d in steps:
                    w = torch.add(w, d[i], alpha=float(coef))
                p.copy_(w)

    try:
        yield move
    finally:
        with torch.no_grad():
            for p, w0 in zip(params, originals, strict=True):
                p.copy_(w0)


def curve_1d(model: nn.Module, direction: Direction, alphas: Sequence[float], batches: Batches,
             *, on_point: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Loss and accuracy at w + alpha*d for each alpha: {"alphas", "loss", "acc"} (arrays of len(alphas))."""
    alphas = np.asarray(alphas, dtype=np.float64)
    loss, acc = np.empty(len(alphas)), np.empty(len(alphas))
    with _perturbable(model) as move:
        for i, a in enumerate(alphas):
            move([(a, direction)])
            loss[i], acc[i] = eval_loss_acc(model, batches)
            if on_point is not None:
                on_point(i + 1, len(alphas))
    return {"alphas": alphas, "loss": loss, "acc": acc}


# --- 2-D grids (resumable) ----------------------------------------------------------------------

@dataclass
class Grid:
    """loss[i, j] and acc[i, j] at w + xs[j]*d1 + ys[i]*d2 (rows follow ys, so `contour(xs, ys, loss)`)."""

    xs: np.ndarray          # (nx,)
    ys: np.ndarray          # (ny,)
    loss: np.ndarray        # (ny, nx); NaN in rows not computed yet
    acc: np.ndarray         # (ny, nx)
    rows_done: int
    seed: int               # the directions' seed (-1 when not given)

    @property
    def complete(self) -> bool:
        return self.rows_done == len(self.ys)


def load_grid(path: str | Path) -> Grid:
    with np.load(path) as z:
        return Grid(xs=z["xs"], ys=z["ys"], loss=z["loss"], acc=z["acc"], rows_done=int(z["rows_done"]),
                    seed=int(z["seed"]))


def _save_grid(path: Path, grid: Grid, fingerprint: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, xs=grid.xs, ys=grid.ys, loss=grid.loss, acc=grid.acc, rows_done=np.int64(grid.rows_done),
             seed=np.int64(grid.seed), fingerprint=fingerprint)
    atomic_write_bytes(path, buf.getvalue())


def _resume_state(path: Path, xs: np.ndarray, ys: np.ndarray, seed: int, fingerprint: np.ndarray) -> Grid | None:
    """The partial grid in `path` if it was computed for these xs, ys and directions; None (and a warning) if not."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            old = Grid(xs=z["xs"], ys=z["ys"], loss=z["loss"], acc=z["acc"], rows_done=int(z["rows_done"]),
                       seed=int(z["seed"]))
            old_fp = z["fingerprint"]
    except Exception as e:  # truncated or foreign file: recompute rather than crash
        warnings.warn(f"{path}: unreadable ({type(e).__name__}: {e}); computing the grid from the start", stacklevel=3)
        return None
    same = (old.xs.shape == xs.shape and old.ys.shape == ys.shape and np.array_equal(old.xs, xs)
            and np.array_equal(old.ys, ys) and old.seed == seed and old_fp.shape == fingerprint.shape
            and np.allclose(old_fp, fingerprint, rtol=1e-6, atol=0.0))
    if not same:
        warnings.warn(f"{path}: saved grid was made for other coordinates or directions (seed {old.seed}, "
                      f"{len(old.xs)}x{len(old.ys)}); computing the grid from the start", stacklevel=3)
        return None
    return old


def grid_2d(model: nn.Module, d1: Direction, d2: Direction, xs: Sequence[float], ys: Sequence[float],
            batches: Batches, npz_path: str | Path, *, seed: int | None = None, max_rows: int | None = None,
            on_row: Callable[[int, int], None] | None = None) -> Grid:
    """Loss and accuracy on the plane w + x*d1 + y*d2, saved to `npz_path` after every row of ys.

    If `npz_path` holds a partial grid for the same xs, ys, direction seed and directions (checked by a
    fingerprint), the rows already done are kept and the rest computed; otherwise it starts over with a
    warning. `max_rows` stops after that many *new* rows (the returned grid is then incomplete);
    `on_row(rows_done, total_rows)` is called after each saved row (progress; an exception raised there
    stops the run with the file holding every finished row). The weights are restored exactly on return.
    """
    path = Path(npz_path)
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    seed = -1 if seed is None else int(seed)
    fingerprint = direction_fingerprint(d1, d2)
    grid = _resume_state(path, xs, ys, seed, fingerprint)
    if grid is None:
        grid = Grid(xs=xs, ys=ys, loss=np.full((len(ys), len(xs)), np.nan), acc=np.full((len(ys), len(xs)), np.nan),
                    rows_done=0, seed=seed)
    new_rows = 0
    with _perturbable(model) as move:
        for i in range(grid.rows_done, len(ys)):
            if max_rows is not None and new_rows >= max_rows:
                break
            for j, x in enumerate(xs):
                move([(x, d1), (ys[i], d2)])
                grid.loss[i, j], grid.acc[i, j] = eval_loss_acc(model, batches)
            grid.rows_done, new_rows = i + 1, new_rows + 1
            _save_grid(path, grid, fingerprint)
            if on_row is not None:
                on_row(grid.rows_done, len(ys))
    if grid.rows_done == 0:  # nothing computed (max_rows=0): still leave a file that records the request
        _save_grid(path, grid, fingerprint)
    return grid


# --- sharpness ----------------------------------------------------------------------------------

def sharpness(model: nn.Module, batches: Batches, *, radius: float, k: int, seed: int,
              ignore_1d: bool = True) -> tuple[float, float]:
    """Mean and standard deviation over K random directions d of loss(w + radius*d) - loss(w).

    The directions are filter-normalised (`random_directions(seed=seed, n=k)`), so `radius` is in the units
    of the landscape plots' axes: radius r moves every filter by r times its own norm (r = 0.5: each filter
    by half its length). The value is therefore comparable across models whose weights have different
    scales. The std is the sample standard deviation over the K directions (0 when K = 1).
    """
    if k < 1:
        raise ValueError(f"sharpness needs k >= 1 directions, got {k}")
    base, _ = eval_loss_acc(model, batches)
    rises = np.empty(k)
    # normalise against a copy: the model's own weights are moved while the directions are drawn
    trained = [p.detach().clone() for p in model.parameters()]
    gen_dirs = _direction_stream(trained, seed=seed, ignore_1d=ignore_1d)
    with _perturbable(model) as move:
        for i in range(k):
            move([(radius, next(gen_dirs))])
            rises[i] = eval_loss_acc(model, batches)[0] - base
    return float(rises.mean()), float(rises.std(ddof=1)) if k > 1 else 0.0


def axis(span: float, points: int) -> np.ndarray:
    """`points` evenly spaced coordinates in [-span, span] (an odd count includes the trained point 0 exactly)."""
    if points < 2:
        raise ValueError(f"an axis needs at least 2 points, got {points}")
    xs = np.linspace(-span, span, points)
    if points % 2 == 1:
        xs[points // 2] = 0.0
    return xs


__all__ = [
    "Direction", "Grid", "axis", "curve_1d", "direction_fingerprint", "eval_loss_acc", "grid_2d", "load_grid",
    "random_direction", "random_directions", "save_directions", "sharpness", "subset_batches",
]
