"""One trial: train one method on one dataset and model, measured, checkpointed every epoch, resumable.

`train_trial(spec, out_dir)` is an ordinary function (no Ray). It reads top to bottom: set up, resume,
loop over epochs (train steps, then an evaluation that uses plain cross-entropy), write results.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.config.spec import TrialSpec
from harness.errors import UserError
from harness.io import append_jsonl, atomic_write_bytes, atomic_write_json, environment, write_jsonl
from harness.train.memory import peak_rss, reset_peak_rss
from methods import Method, StepContext, build_method, load_user_module

ECE_BINS = 15
CHECKPOINT = "checkpoint.pt"


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial stops and is recorded as failed."""


# --- small pure helpers -------------------------------------------------------------------------

def lr_at(step: int, *, steps_per_epoch: int, lr: float, milestones: tuple[int, ...], gamma: float,
          warmup_epochs: int) -> float:
    """Step-wise multistep schedule with an optional linear warm-up (TF-KD warms up for one epoch)."""
    epoch = step // steps_per_epoch
    factor = gamma ** sum(epoch >= m for m in milestones)
    warm = warmup_epochs * steps_per_epoch
    if step < warm:
        factor *= (step + 1) / warm
    return lr * factor


def ece_counts(probs: Tensor, targets: Tensor, bins: int = ECE_BINS) -> Tensor:
    """Per-bin (count, sum confidence, sum correct) as a (3, bins) tensor, so batches add up on the device."""
    conf, pred = probs.max(dim=1)                                          # (B,), (B,)
    idx = torch.clamp((conf * bins).ceil().long() - 1, 0, bins - 1)        # bins (0, 1/b], (1/b, 2/b], ...
    out = torch.zeros(3, bins, device=probs.device, dtype=torch.float64)
    out[0].index_add_(0, idx, torch.ones_like(conf, dtype=torch.float64))
    out[1].index_add_(0, idx, conf.double())
    out[2].index_add_(0, idx, (pred == targets).double())
    return out


def ece_from_counts(counts: Tensor) -> float:
    n, conf, correct = counts.double().cpu()
    total = n.sum().clamp_min(1)
    return float((torch.abs(correct - conf)).sum() / total)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """auto | cpu | cuda | cuda:N; `what` names the setting in the one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise UserError(f"{what} is {name!r}; allowed: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{what} is {name!r} but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


# --- data -------------------------------------------------------------------------------------

class BatchPlan(torch.utils.data.Sampler):
    """The index batches of one epoch: a seeded permutation cut into global batches of `batch_size`, each
    worker keeping its slice `[rank::world]`. For a paired method (CS-KD) the method's sampler picks
    (anchor, partner) batches and a batch is `cat(anchors, partners)`, 2B indices."""

    def __init__(self, labels: Tensor, batch_size: int, generator: torch.Generator, method: Method,
                 rank: int = 0, world: int = 1, max_steps: int = 0):
        self.labels, self.batch_size, self.generator, self.method = labels, batch_size, generator, method
        self.rank, self.world, self.max_steps = rank, world, max_steps

    def __len__(self) -> int:
        n = math.ceil(len(self.labels) / self.batch_size)
        return min(n, self.max_steps) if self.max_steps else n

    def __iter__(self) -> Iterator[Tensor]:
        device = self.generator.device
        if self.method.needs.pairs:
            batches = ((a, p) for a, p in self.method.pair_batches(self.labels.to(device), self.batch_size,
                                                                   self.generator))
        else:
            perm = torch.randperm(len(self.labels), generator=self.generator, device=device)
            batches = ((perm[s:s + self.batch_size], None) for s in range(0, len(perm), self.batch_size))
        for step, (anchors, partners) in enumerate(batches):
            if step >= len(self):
                return
            local = anchors[self.rank::self.world]
            if partners is not None:
                local = torch.cat([local, partners[self.rank::self.world]])
            yield local


def make_loaders(bundle: Any, spec: TrialSpec, plan: BatchPlan, device: torch.device,
                 generator: torch.Generator) -> tuple[Callable[[], Iterator[tuple]], Any]:
    """(epoch iterator factory yielding (x, y, idx), val loader). In-memory sets take the fast path:
    the split is one tensor on the device and augmentation runs there, batched; others use a DataLoader."""
    from harness.data.fast import TensorLoader

    t, mem = spec.train, bundle.memory
    if t.fast_path and mem is not None:
        common = dict(device=device, mean=bundle.mean, std=bundle.std, channels_last=device.type == "cuda")
        train = TensorLoader(mem.train_x, mem.train_y, batch_size=t.batch_size, shuffle=True, drop_last=False,
                             generator=generator, crop_padding=mem.crop_padding, flip=mem.flip, **common)
        val = TensorLoader(mem.val_x, mem.val_y, batch_size=max(t.batch_size, 256), shuffle=False,
                           drop_last=False, generator=generator, **common)
        return (lambda: (train.batch(idx) for idx in plan)), val
    loader = torch.utils.data.DataLoader(bundle.train, batch_sampler=_ListPlan(plan), num_workers=t.num_workers,
                                         pin_memory=device.type == "cuda", persistent_workers=t.num_workers > 0)
    val = torch.utils.data.DataLoader(bundle.val, batch_size=max(t.batch_size, 256), shuffle=False,
                                      num_workers=t.num_workers)
    return (lambda: iter(loader)), val


class _ListPlan(torch.utils.data.Sampler):
    def __init__(self, plan: BatchPlan):
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[list[int]]:
        return (idx.tolist() for idx in self.plan)


# --- evaluation (plain cross-entropy, whatever the method) --------------------------------------

@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, device: torch.device, amp: bool) -> dict[str, float]:
    model.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # n, correct@1, correct@5, nll
    ece = torch.zeros(3, ECE_BINS, device=device, dtype=torch.float64)
    for x, y, _ in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices                                  # (B, k)
        hit = top == y[:, None]
        sums += torch.stack([torch.tensor(float(len(y)), device=device), hit[:, 0].sum(), hit.any(1).sum(),
                             F.cross_entropy(logits, y, reduction="sum")]).double()
        ece += ece_counts(logits.softmax(1), y)
    n, c1, c5, nll = sums.tolist()
    return {"val_top1": c1 / n, "val_top5": c5 / n, "val_nll": nll / n, "val_ece": ece_from_counts(ece)}


# --- checkpoints --------------------------------------------------------------------------------
# Each checkpoint file is torch.save's bytes followed by a sha256 trailer. Why: torch.load accepts a
# file with a flipped byte inside a tensor and returns wrong weights without a word (zip entries are
# not CRC-checked on read), so a damaged file would silently train on. torch's zip reader ignores
# trailing bytes, so the file stays loadable by a plain torch.load. The previous epoch's checkpoint is
# kept as checkpoint.prev.pt, so a damaged latest file costs one epoch, not the whole trial.

_DIGEST_TAG = b"\n#tfbench-sha256:"
_TRAILER_LEN = len(_DIGEST_TAG) + 64 + 1  # tag, hex digest, newline


class DamagedCheckpoint(ValueError):
    """A checkpoint file whose checksum or contents do not check out."""


def previous_checkpoint(path: Path) -> Path:
    return path.with_suffix(".prev" + path.suffix)  # checkpoint.pt -> checkpoint.prev.pt


def save_checkpoint(path: Path, **state: Any) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)  # serialise first: a failure here leaves both files on disk as they were
    payload = buf.getvalue()
    data = payload + _DIGEST_TAG + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    if path.exists():  # a kill between these two lines leaves only .prev, which the loader then takes
        os.replace(path, previous_checkpoint(path))
    atomic_write_bytes(path, data)


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The state saved by `save_checkpoint`; raises DamagedCheckpoint if the file is truncated or altered."""
    data = path.read_bytes()
    tail = data[-_TRAILER_LEN:]
    if len(data) <= _TRAILER_LEN or not tail.startswith(_DIGEST_TAG) or not tail.endswith(b"\n"):
        raise DamagedCheckpoint("no checksum trailer (truncated, or not written by tfbench)")
    payload = data[:-_TRAILER_LEN]
    if hashlib.sha256(payload).hexdigest().encode() != tail[len(_DIGEST_TAG):-1]:
        raise DamagedCheckpoint("sha256 mismatch (the file was altered or damaged)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as e:  # checksummed yet unreadable: written by an incompatible torch version
        raise DamagedCheckpoint(f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise DamagedCheckpoint("missing keys")
    return state


def load_checkpoint(path: Path, log: Callable[[str], None], rename: bool = True,
                    max_epoch: int | None = None) -> dict[str, Any] | None:
    """The newest intact checkpoint among `path` and its .prev, or None (start from scratch).

    A damaged file is reported and renamed to *.corrupt (kept for inspection, out of the next run's way);
    one newer than `max_epoch` (the epochs the metrics record still holds) is passed over, so that the
    record and the weights never disagree. Never raises for a bad file: the trial restarts rather than crash.
    """
    damaged = []
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.exists():
            continue
        try:
            state = read_checkpoint(candidate)
        except (OSError, DamagedCheckpoint) as e:
            log(f"warning: checkpoint {candidate} is unreadable ({e})")
            damaged.append(candidate.name)
            if rename:
                os.replace(candidate, candidate.with_suffix(".corrupt"))
            continue
        if max_epoch is not None and state["epoch"] > max_epoch:
            log(f"warning: checkpoint {candidate} (epoch {state['epoch']}) is ahead of the intact metrics "
                f"record (epoch {max_epoch}); not using it")
            damaged.append(candidate.name)
            continue
        if damaged or candidate != path:
            log(f"warning: falling back to the last good checkpoint {candidate.name} (epoch {state['epoch']})")
        return state
    if damaged:
        log(f"warning: no usable checkpoint ({', '.join(damaged)} unreadable or ahead of the record); "
            f"starting this trial from scratch")
    return None


def read_metrics(path: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The leading run of intact per-epoch records (epochs 1, 2, ...); a damaged line ends it, with a warning."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and row.get("epoch") == len(rows) + 1
        except ValueError:
            ok = False
        if not ok:
            log(f"warning: {path} line {n} is damaged or out of order; keeping epochs 1-{len(rows)} of the record")
            break
        rows.append(row)
    return rows


# --- the trial ----------------------------------------------------------------------------------

def build_parts(spec: TrialSpec, device: torch.device):
    """Dataset, model and method of a spec (shared by training and by `load_trained`)."""
    from harness.data import build_dataset
    from harness.models import create_model, feature_channels

    for ref in spec.imports:
        load_user_module(ref)
    bundle = build_dataset(spec.dataset, dict(spec.dataset_params))
    model = create_model(spec.model, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                         input_size=bundle.input_size, **spec.model_params)
    try:  # a method's needs may depend on its parameters, so every method is told the channel counts
        channels = feature_channels(model)
    except (UserError, AttributeError, KeyError, IndexError, TypeError):
        channels = None  # a model without stage information: methods that need maps will say so
    method = build_method(spec.method, dict(spec.method_params), num_classes=bundle.num_classes,
                          num_train=len(bundle.train_labels), feature_channels=channels)
    return bundle, model.to(device), method.to(device)


def train_step(*, model: torch.nn.Module, method: Method, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
               xp: Tensor | None, ctx: StepContext, lr: float, classifier: torch.nn.Module | None, amp: bool,
               sums: dict[str, Tensor], counts: Tensor, params: list[Tensor], world: int = 1,
               after_loss: Callable[[], None] | None = None) -> None:
    """One optimisation step: the code path of every trial, and of `tfbench bench step`.

    x (B, C, H, W), y (B,), xp: CS-KD's partner images (B, C, H, W) or None. Adds each loss part times B
    into `sums` and (correct, seen) into `counts`, on the device: nothing here reads a value on the host.
    `after_loss()` is called once the loss exists (the benchmark's forward timer).
    """
    from harness.models import forward_with_maps

    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        if method.needs.features:
            logits, ctx.final_map, ctx.prev_map = forward_with_maps(model, x)
            ctx.classifier = classifier
        else:
            logits = model(x)
        if xp is not None:
            with torch.no_grad():  # partners: train mode (BN statistics see both halves), no gradient
                ctx.partner_logits = model(xp).float()
    parts = method.loss(logits.float(), y, ctx)
    if after_loss is not None:
        after_loss()
    opt.zero_grad(set_to_none=True)
    parts["loss"].backward()
    if world > 1:
        _average_gradients(params, world)
    opt.step()
    if world > 1 and hasattr(method, "pending_update"):
        _gather_update(method)
    else:
        method.on_step_end()
    for name, value in parts.items():
        sums[name] = sums.get(name, 0) + value.detach().float() * len(y)
    counts[0] += (logits.detach().argmax(1) == y).sum()
    counts[1] += len(y)


def train_trial(spec: TrialSpec, out_dir: str | Path, *, report: Callable[[dict], None] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `spec`, writing config.json, metrics.jsonl, checkpoint.pt and result.json under `out_dir`.

    `report(metrics)` is called after every epoch, once the epoch's checkpoint is on disk (Ray Tune
    reports through it). If `out_dir` holds a checkpoint, training resumes from it. Inside a torch.distributed
    job (Ray Train) every worker takes its slice of each global batch, gradients are averaged, and only
    rank 0 writes files.
    """
    from harness.models import classifier as get_classifier

    out = Path(out_dir)
    t = spec.train
    rank, world = _dist_rank_world()
    lead = rank == 0
    device = _worker_device(t.device, world)
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    seed_everything(spec.seed)
    bundle, model, method = build_parts(spec, device)
    extra = method.extra_modules()
    if extra is not None:
        extra.to(device)
    on_cuda = device.type == "cuda"
    amp = t.amp and on_cuda
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov)
    fast = t.fast_path and bundle.memory is not None
    generator = torch.Generator(device=device if fast else "cpu")
    generator.manual_seed(spec.seed)
    method_gen = torch.Generator(device=device)
    method_gen.manual_seed(spec.seed + 1)
    plan = BatchPlan(bundle.train_labels, t.batch_size, generator, method, rank, world, t.max_steps_per_epoch)
    batches, val_loader = make_loaders(bundle, spec, plan, device, generator)
    steps_per_epoch = len(plan)
    step_model = torch.compile(model) if t.compile else model
    classifier = get_classifier(model) if method.needs.features else None

    if lead:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {"key": spec.key(), "seed": spec.seed, "spec": spec.to_dict(),
                                                "env": environment(str(device)), "world_size": world})
    start_epoch, best, timing = 0, {"top1": -1.0, "epoch": 0}, {"steps": 0, "seconds": 0.0}
    quiet = log if lead else (lambda s: None)
    # the record and the weights must agree: resume from a checkpoint no newer than the intact record
    history = read_metrics(out / "metrics.jsonl", quiet) if t.checkpoint else []
    state = load_checkpoint(out / CHECKPOINT, quiet, rename=lead, max_epoch=len(history)) if t.checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        method.load_state_dict(state["method"])
        if extra is not None:
            extra.load_state_dict(state["extra"])
        generator.set_state(state["rng"]["loader"])
        method_gen.set_state(state["rng"]["method"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        start_epoch, best, timing = state["epoch"], state["best"], state["timing"]
        if lead:  # the metrics file may hold an epoch the checkpoint does not (a kill between the two writes)
            write_jsonl(out / "metrics.jsonl", history[:start_epoch])
            log(f"resuming {spec.key()} from epoch {start_epoch}")
    elif lead and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    if world > 1:
        _broadcast(params + list(model.buffers()))

    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    wall0 = time.perf_counter()
    # leave the first steps of this process (allocator, caches, compilation) out of the step time
    warmup_steps = min(3, steps_per_epoch // 4)
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, t.epochs):
        method.on_epoch_start(epoch, t.epochs)
        model.train()
        sums: dict[str, Tensor] = {}
        counts = torch.zeros(2, device=device)  # correct, seen
        _sync(device)
        tick, counted = time.perf_counter(), 0
        for i, (x, y, idx) in enumerate(batches()):
            if epoch == start_epoch and i == warmup_steps and warmup_steps:
                _sync(device)
                tick, counted = time.perf_counter(), 0
            x, y, idx = x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx.to(device)
            xp = None
            if method.needs.pairs:  # the batch is cat(anchors, partners)
                half = len(y) // 2
                x, xp, y, idx = x[:half], x[half:], y[:half], idx[:half]
            lr = lr_at(epoch * steps_per_epoch + i, steps_per_epoch=steps_per_epoch, lr=t.lr,
                       milestones=t.milestones, gamma=t.gamma, warmup_epochs=t.warmup_epochs)
            ctx = StepContext(epoch=epoch, num_epochs=t.epochs, indices=idx, generator=method_gen)
            with _no_host_sync(t.sync_debug and on_cuda):
                train_step(model=step_model, method=method, opt=opt, x=x, y=y, xp=xp, ctx=ctx, lr=lr,
                           classifier=classifier, amp=amp, sums=sums, counts=counts, params=params, world=world)
            counted += 1
        _sync(device)
        train_time = time.perf_counter() - tick
        timing["seconds"] += train_time
        timing["steps"] += counted
        if world > 1:
            _reduce_epoch(method, sums, counts, list(model.buffers()))
        method.on_epoch_end(epoch)
        seen = counts[1].item()
        train_stats = {("train_loss" if k == "loss" else f"train_{k}"): v.item() / seen for k, v in sums.items()}
        if not all(math.isfinite(v) for v in train_stats.values()):
            raise TrialDiverged(f"trial {spec.key()}: the loss became {train_stats['train_loss']} in epoch "
                                f"{epoch + 1} (method {spec.method}, lr {lr:g}); stopping")
        metrics = {"epoch": epoch + 1, **train_stats, "train_top1": counts[0].item() / seen,
                   **evaluate(model, val_loader, device, amp), "lr": lr,
                   "epoch_time_s": train_time, "step_time_s": timing["seconds"] / max(timing["steps"], 1)}
        if metrics["val_top1"] > best["top1"]:
            best = {"top1": metrics["val_top1"], "top5": metrics["val_top5"], "epoch": epoch + 1}
        if lead:
            append_jsonl(out / "metrics.jsonl", metrics)
            if t.checkpoint:
                save_checkpoint(out / CHECKPOINT, model=model.state_dict(), optimizer=opt.state_dict(),
                                method=method.state_dict(), extra=extra.state_dict() if extra is not None else None,
                                epoch=epoch + 1, best=best, timing=timing, spec=spec.to_dict(),
                                rng={"loader": generator.get_state(), "method": method_gen.get_state(),
                                     "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                     "python": random.getstate()})
            log(f"epoch {epoch + 1:>3}/{t.epochs}  loss {metrics['train_loss']:.4f}  train {metrics['train_top1']:.3f}"
                f"  val {metrics['val_top1']:.4f}  top5 {metrics['val_top5']:.4f}  nll {metrics['val_nll']:.3f}"
                f"  ece {metrics['val_ece']:.3f}  lr {lr:.4g}  {train_time:.1f}s")
        if world > 1:
            torch.distributed.barrier()  # nobody reads a checkpoint that rank 0 is still writing
        if report is not None:
            report(metrics)

    if not metrics:  # resumed from a finished checkpoint: rebuild the final record from disk
        rows = read_metrics(out / "metrics.jsonl", log if lead else (lambda s: None))
        metrics = rows[-1] if rows else {}
    step_time = timing["seconds"] / max(timing["steps"], 1)
    result = {
        "status": "finished",
        "best_top1": best["top1"], "best_top5": best.get("top5"), "best_epoch": best["epoch"],
        "last_top1": metrics.get("val_top1"), "last_top5": metrics.get("val_top5"),
        "last_nll": metrics.get("val_nll"), "last_ece": metrics.get("val_ece"),
        "train_top1": metrics.get("train_top1"),
        "train_val_gap": (metrics["train_top1"] - metrics["val_top1"]) if metrics else None,
        "step_time_s": step_time, "images_per_s": t.batch_size / step_time if step_time else None,
        "peak_mem_bytes": _peak_memory(device), "peak_mem_kind": "cuda_allocated" if on_cuda else "cpu_peak_rss",
        "state_bytes": method.state_nbytes(), "epochs": t.epochs, "world_size": world,
        "wall_time_s": time.perf_counter() - wall0, "key": spec.key(),
        # on_bad_image=skip: the undecodable files this process met (0 for in-memory datasets)
        "skipped_images": bundle.skipped_images,
    }
    if lead:
        if result["skipped_images"]:
            files = bundle.skipped_files()
            log(f"warning: skipped {result['skipped_images']} undecodable image(s) (on_bad_image=skip): "
                + ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))
        atomic_write_json(out / "result.json", result)
        # the final checkpoint is what analyses load; the previous epoch's only served a resume
        previous_checkpoint(out / CHECKPOINT).unlink(missing_ok=True)
    return result


# --- data parallel (torch.distributed, set up by Ray Train's TorchTrainer) -----------------------

def _dist_rank_world() -> tuple[int, int]:
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


def _worker_device(name: str, world: int) -> torch.device:
    if world > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        from ray.train.torch import get_device  # the GPU Ray Train assigned to this worker

        return get_device()
    return resolve_device(name)


def _broadcast(tensors: list[Tensor]) -> None:
    for t in tensors:
        torch.distributed.broadcast(t.data, src=0)


def _average_gradients(params: list[Tensor], world: int) -> None:
    """All-reduce every gradient as one flat buffer. Why not DDP: methods call the classifier outside
    forward (dense votes) and add their own modules (Zipf's extra classifier), which DDP's forward hooks miss."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _gather_update(method: Method) -> None:
    """PS-KD: every worker writes the predictions of the whole global batch into its table."""
    pending = method.pending_update()
    if pending is None:
        return
    idx, values = pending
    world = torch.distributed.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=idx.device) for _ in range(world)]
    torch.distributed.all_gather(sizes, torch.tensor([len(idx)], device=idx.device))
    n = int(max(s.item() for s in sizes))
    pad_idx = torch.full((n,), -1, dtype=idx.dtype, device=idx.device)
    pad_idx[:len(idx)] = idx
    pad_val = torch.zeros((n, values.shape[1]), dtype=values.dtype, device=values.device)
    pad_val[:len(idx)] = values
    all_idx = [torch.empty_like(pad_idx) for _ in range(world)]
    all_val = [torch.empty_like(pad_val) for _ in range(world)]
    torch.distributed.all_gather(all_idx, pad_idx)
    torch.distributed.all_gather(all_val, pad_val)
    idx, values = torch.cat(all_idx), torch.cat(all_val)
    keep = idx >= 0
    method.apply_update(idx[keep], values[keep])


def _reduce_epoch(method: Method, sums: dict[str, Tensor], counts: Tensor, buffers: list[Tensor]) -> None:
    """Once per epoch: sum the loss sums, counts and the method's per-epoch accumulators over workers, and
    take rank 0's batch-norm statistics so that every worker evaluates the same model."""
    for v in list(sums.values()) + [counts] + list(method.epoch_sums()):
        torch.distributed.all_reduce(v)
    _broadcast(buffers)


class _no_host_sync:
    """With train.sync_debug on CUDA, any host synchronisation inside a training step raises (the proof
    behind "no host sync in the step"; `tfbench bench gpu` turns it on)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self) -> None:
        if self.enabled:
            torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc: Any) -> None:  # also on an exception, so the mode never leaks
        if self.enabled:
            torch.cuda.set_sync_debug_mode("default")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss()


# --- loading a trained trial (analyses, landscapes) ---------------------------------------------

@dataclass
class Trained:
    model: torch.nn.Module
    method: Method
    bundle: Any
    spec: TrialSpec
    trial_dir: Path


def load_trained(trial_dir: str | Path, device: str = "cpu") -> Trained:
    trial_dir = Path(trial_dir)
    ckpt = trial_dir / CHECKPOINT
    if not ckpt.exists():
        raise UserError(f"{trial_dir}: no {CHECKPOINT} (was the trial run with train.checkpoint: true?)")
    try:
        state = read_checkpoint(ckpt, map_location=device)
    except DamagedCheckpoint as e:
        raise UserError(f"{ckpt} is damaged ({e}); delete {trial_dir} and rerun its sweep to retrain it") from None
    spec = TrialSpec.from_dict(state["spec"])
    bundle, model, method = build_parts(spec, torch.device(device))
    model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
    extra = method.extra_modules()
    if extra is not None and state.get("extra") is not None:
        extra.load_state_dict(state["extra"])
    model.eval()
    return Trained(model=model, method=method, bundle=bundle, spec=spec, trial_dir=trial_dir)
