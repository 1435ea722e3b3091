"""One trial: train one method on one dataset and model, measured, checkpointed every epoch, resumable.

`train_trial(spec, out_dir)` is an ordinary function (no Ray). It reads top to bottom: set up, resume, loop
over epochs (train steps, then an evaluation on the selection split with plain cross-entropy), evaluate the
test split under `clean`, write results. The pieces live beside it: `parts` (dataset, model, method,
loaders), `splits` (the protocols), `resume` (claim and resume), `metrics`, `checkpoint`, `distributed`,
`device`, `trained`. The record's metrics are named by the vocabulary (harness/metrics.py), not here.

Over 400 lines, `train_trial` about a hundred and `train_step` sixteen keyword arguments, on purpose: the
trial reads top to bottom in one function as nanoGPT's loop does (set up, resume, epochs, finish), and the
step takes plain tensors and modules so that `tfbench bench step` times the very step a trial takes without
building a trial; a rig object in their place would hide what the step touches.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.config.selection import diagnose, is_better, selection_rule
from harness.config.spec import TrainConfig, TrialSpec
from harness.errors import UserError
from harness.folders import TrialFolder
from harness.io import append_jsonl, environment
from harness.metrics import epoch_values, reported_quantities
from harness.train.checkpoint import (
    BEST,
    CHECKPOINT,
    previous_checkpoint,
    read_checkpoint,
)
from harness.train.device import (
    configure_backends,
    no_host_sync,
    peak_memory,
    resolve_device,
    seed_everything,
    sync,
)
from harness.train.distributed import (
    barrier,
    data_parallel,
    gather_update,
    rank_world,
    reduce_epoch,
    worker_device,
)
from harness.train.memory import reset_peak_rss
from harness.train.metrics import ece_counts, ece_from_counts, evaluate, lr_at
from harness.train.optim import make_optimizer
from harness.train.parts import BatchPlan, Loaders, build_parts, make_loaders
from harness.train.recipes import describe, make_ema, make_mixer, mixed_loss
from harness.train.resume import claim, resume, trial_state
from harness.train.splits import make_splits
from harness.train.trained import Trained, load_trained
from harness.train.transfer import describe_source, freeze_backbone, hold_frozen_norms, init_from
from harness.train.walltime import WallClock
from harness.train.writer import Checkpoints
from methods import Method, StepContext

# the loop's names, and those of its pieces that the analyses and benchmarks take from here
__all__ = ["CHECKPOINT", "BEST", "TrialDiverged", "Trained", "ece_counts", "ece_from_counts", "evaluate",
           "load_trained", "lr_at", "resolve_device", "seed_everything", "train_step", "train_trial"]

# seeds of a trial's independent random streams, as offsets from the trial seed
LOADER_STREAM, METHOD_STREAM, GLOBAL_STREAM = 0, 1, 2


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial stops and is recorded as failed."""


def train_step(*, model: torch.nn.Module, method: Method, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
               xp: Tensor | None, ctx: StepContext, lr: float, classifier: torch.nn.Module | None, amp: bool,
               sums: dict[str, Tensor], counts: Tensor, gather: Callable[[Method], None] | None = None,
               after_loss: Callable[[], None] | None = None,
               loss_fn: Callable[[Tensor, Tensor, StepContext], dict[str, Tensor]] | None = None) -> None:
    """One optimisation step: the code path of every trial, and of `tfbench bench step`.

    x (B, C, H, W), y (B,), xp: CS-KD's partner images (B, C, H, W) or None. Adds each loss part times B
    into `sums` and (correct, seen) into `counts`, on the device: nothing here reads a value on the host.
    `after_loss()` is called once the loss exists (the benchmark's forward timer). `model` may be a compiled
    module (for methods that need maps, a compiled `MapsForward`) and `loss_fn` the method's compiled loss
    (`train.compile`); by default `method.loss`. In a data-parallel trial `model` is the DDP-wrapped forward
    (its backward averages the gradients) and `gather` hands the method's per-sample updates to every worker.
    """
    from harness.models import forward_with_maps, forward_with_stages

    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        if method.needs.features:
            logits, ctx.final_map, ctx.prev_map = forward_with_maps(model, x)
            ctx.classifier = classifier
        elif method.needs.stages:
            logits, ctx.stage_maps = forward_with_stages(model, x)
        else:
            logits = model(x)
        if xp is not None and method.needs.overlap:
            # DLB: the previous batch's samples, re-augmented, in a forward of their own (with gradient)
            ctx.overlap_logits = model(xp).float()
        elif xp is not None:
            # partners: train mode (BN statistics see both halves), no gradient; under DDP a no-grad forward
            # arms no reduction and (forward_sync_buffers=False) synchronises nothing
            with torch.no_grad():
                ctx.partner_logits = model(xp).float()
    parts = mixed_loss(loss_fn or method.loss, method, logits.float(), y, ctx)  # plain loss unless mixed
    if after_loss is not None:
        after_loss()
    opt.zero_grad(set_to_none=True)
    parts["loss"].backward()
    opt.step()
    if gather is not None:  # every worker's table gets the whole global batch; on_step_end then finds nothing pending
        gather(method)
    method.on_step_end()
    for name, value in parts.items():
        sums[name] = sums.get(name, 0) + value.detach().float() * len(y)
    counts[0] += (logits.detach().argmax(1) == y).sum()
    counts[1] += len(y)


@dataclass
class StepRig:
    """What `train_step` runs with, built from a model and a method (`build_step_rig`). Why a part of its own:
    `tfbench bench step` builds its rigs with it, so the benchmark times the step a trial takes."""

    model: torch.nn.Module
    step_model: torch.nn.Module    # the model, or its forward (maps included) in DDP and/or compiled
    method: Method
    loss_fn: Callable[[Tensor, Tensor, StepContext], dict[str, Tensor]]  # method.loss, or its compiled form
    extra: torch.nn.Module | None  # the method's trainable modules
    params: list[Tensor]
    opt: torch.optim.Optimizer
    classifier: torch.nn.Module | None
    device: torch.device
    amp: bool


@dataclass
class Rig(StepRig):
    """Everything one trial trains with, built once from the spec (`build_rig`)."""

    generator: torch.Generator     # data order and augmentation
    method_gen: torch.Generator    # the method's random draws
    plan: BatchPlan
    loaders: Loaders
    bundle: Any
    select_labels: Tensor          # labels of the split the epoch is selected on (its size and class counts)
    rank: int
    world: int
    backends: dict[str, Any]       # cuDNN autotuning, TF32, determinism as set for this trial (config.json)
    gather: Callable[[Method], None] | None  # data-parallel: every worker's per-sample updates to all of them
    ema: Any = None                # timm's ModelEmaV3 (train.ema): what is evaluated, selected and tested
    mixer: Any = None              # recipes.Mixer (train.mixup, train.cutmix)
    source: dict | None = None     # train.init_from: the source's file, hash and key (config.json)

    @property
    def judged(self) -> torch.nn.Module:
        """The weights evaluated, selected and tested: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


def train_trial(spec: TrialSpec, out_dir: str | Path, *, report: Callable[[dict], None] | None = None,
                log: Callable[[str], None] = print, startup: dict[str, float] | None = None,
                bundle: Any = None, force: bool = False) -> dict[str, Any]:
    """Train `spec`, writing config.json, metrics.jsonl, checkpoint.pt, best.pt (clean) and result.json.

    `report(metrics)` is called after every epoch (Ray Tune reports through it), once the epoch's line is in
    metrics.jsonl and, when a checkpoint is due (`train.checkpoint_every`), its snapshot is queued for the
    background writer: the file lands later, and is on disk by the next checkpoint's snapshot and whenever
    train_trial returns or raises (a kill before that resumes from the previous checkpoint). If `out_dir` holds a checkpoint, training resumes from it. Inside a torch.distributed
    job (Ray Train) every worker takes its slice of each global batch, gradients are averaged, and only
    rank 0 writes files. `startup`: when the trial was launched (`launched_at`, time.time()) and the start-up
    parts the caller measured (e.g. Ray Train's `workers_s`, `imports_s`), and when the caller began opening
    the trial (`opened_at`); result.json records `startup_s` (launch to the first training step) and
    `setup_s` (the trial's own set-up from `opened_at`, else from this call: log, live curves, data, model,
    resume).
    `bundle`: the data set already built (a data-parallel trial's driver builds it once for its workers).
    A folder that holds another trial's records is refused (UserError), or with `force` moved aside first.
    """
    entered = time.time()
    trial, t = TrialFolder(out_dir), spec.train
    out = trial.path
    claim(trial, spec.key(), force=force, log=log)
    r = build_rig(spec, bundle)
    lead, clean = r.rank == 0, t.protocol == "clean"
    keeps_best = clean and selection_rule(t.select).reads_split  # `last` selects the final weights: no best.pt
    quiet = log if lead else (lambda s: None)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        trial.write_config({"key": spec.key(), "seed": spec.seed, "spec": spec.to_dict(),
                            "env": {**environment(str(r.device)), "backends": r.backends},
                            "world_size": r.world, **({"init_from": r.source} if r.source else {})})
        for line in (r.bundle.summary, describe(t), describe_source(r.source, t.freeze)):
            if line:
                log(line)
    start_epoch, best, timing, history = resume(r, spec, out, quiet)
    if r.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(r.device)
    else:
        reset_peak_rss()
    saves = Checkpoints(out, every=t.checkpoint_every, enabled=lead and t.checkpoint, keeps_best=keeps_best and lead,
                        device=r.device)
    clock = WallClock(saves)
    # the caller's opening of the trial (its log, the live-curve writers) is set-up too: with it, the parts
    # of a start-up add up to startup_s
    began = (startup or {}).get("opened_at", entered)
    launched = (startup or {}).get("launched_at", began)
    start_record = {"startup_s": time.time() - launched, "setup_s": time.time() - began,
                    **{k: v for k, v in (startup or {}).items() if not k.endswith("_at")}}
    metrics: dict[str, Any] = {}
    try:
        for epoch in range(start_epoch, t.epochs):
            tick = time.perf_counter()
            train_stats, seconds, lr = train_epoch(r, spec, epoch, first=epoch == start_epoch, timing=timing)
            tick = clock.add("steps_time_s", tick)
            # the selection split: the held-out validation split (clean) or the evaluation split (paper)
            metrics = {"epoch": epoch + 1, **train_stats, **evaluate(r.judged, r.loaders.select, r.device, r.amp),
                       "lr": lr, "epoch_time_s": seconds, "step_time_s": timing["seconds"] / max(timing["steps"], 1)}
            clock.add("eval_time_s", tick)
            history.append(metrics)
            if is_better(t.select, top1=metrics["val_top1"], nll=metrics["val_nll"], best_top1=best["top1"],
                         best_nll=best.get("nll", math.inf)):
                best = {"epoch": epoch + 1, **{k: metrics[f"val_{k}"] for k in reported_quantities()}}
                saves.improved(r.judged.state_dict(), epoch=epoch + 1, val_top1=best["top1"])
            if lead and saves.due(epoch + 1, final=epoch + 1 == t.epochs):  # snapshot now, write after the line
                saves.take(trial_state(r, spec, epoch + 1, best, timing))
            metrics.update(clock.lap())
            if lead:
                append_jsonl(trial / trial.METRICS, metrics)
                saves.commit()
                log(f"epoch {epoch + 1:>3}/{t.epochs}  loss {metrics['train_loss']:.4f}  train "
                    f"{metrics['train_top1']:.3f}  val {metrics['val_top1']:.4f}  top5 {metrics['val_top5']:.4f}  "
                    f"nll {metrics['val_nll']:.3f}  ece {metrics['val_ece']:.3f}  lr {lr:.4g}  "
                    f"{metrics['epoch_time_s']:.1f}s")
            barrier(r.world)
            if report is not None:  # the epoch's line is on disk; its checkpoint is queued (see the docstring)
                report(metrics)
    except BaseException:  # a stopped trial (error, Ctrl-C) still leaves the queued files whole on disk
        saves.abandon(quiet)
        raise
    saves.finish()
    barrier(r.world)  # nobody reads best.pt before rank 0's writer has written it

    metrics = history[-1] if history else {}
    last = {k: metrics.get(f"val_{k}") for k in reported_quantities()}
    selected = {k: best.get(k) for k in reported_quantities()}
    tick = time.perf_counter()
    if clean:  # the test split, exactly twice (once when the last epoch is the selected one)
        last = _strip(evaluate(r.judged, r.loaders.test, r.device, r.amp))
        selected = last
        if keeps_best:
            r.model.load_state_dict(read_checkpoint(out / BEST, map_location=r.device)["model"])
            selected = _strip(evaluate(r.model, r.loaders.test, r.device, r.amp))
        quiet(f"test top-1 {selected['top1']:.4f} with the weights of epoch {best['epoch']} (selected by "
              f"{t.select} on the held-out split, top-1 {best['top1']:.4f}), {last['top1']:.4f} with the last weights")
    if lead:  # per-image predictions before the record, so a finished trial has them (docs/results.md)
        from harness.train.evaluation import keep_predictions

        keep_predictions(r.model if keeps_best else r.judged, r.loaders, out, device=r.device, amp=r.amp,
                         holds="selected" if keeps_best else "last", selected_is_last=best["epoch"] == t.epochs)
    clock.add("eval_time_s", tick)  # the test split's evaluation and the predictions kept
    diagnosis = diagnose(t.select, val_top1=[row["val_top1"] for row in history],
                         class_counts=torch.bincount(r.select_labels).tolist())
    if diagnosis.weak:
        quiet(f"warning: the selection split cannot discriminate between epochs: {diagnosis.why}; compare "
              f"the last epoch's numbers (last_*) with the selected ones")
    step_time = timing["seconds"] / max(timing["steps"], 1)
    result = {
        "status": "finished", "protocol": t.protocol,
        "selected_epoch": best["epoch"], **epoch_values(selected=selected, last=last, best=best),
        **diagnosis.record(), "test_images": len(r.bundle.val_labels) if clean else len(r.select_labels),
        "best_epoch": best["epoch"], "train_top1": metrics.get("train_top1"),
        "train_val_gap": (metrics["train_top1"] - metrics["val_top1"]) if metrics else None,
        "step_time_s": step_time, "images_per_s": t.batch_size / step_time if step_time else None,
        "peak_mem_bytes": peak_memory(r.device),
        "peak_mem_kind": "cuda_allocated" if r.device.type == "cuda" else "cpu_peak_rss",
        "state_bytes": r.method.state_nbytes(), "epochs": t.epochs, "world_size": r.world,
        **clock.record(), "key": spec.key(), **start_record,
        # on_bad_image=skip: the undecodable files this process met (0 for in-memory datasets)
        "skipped_images": r.bundle.skipped_images,
    }
    if lead:
        if result["skipped_images"]:
            files = r.bundle.skipped_files()
            log(f"warning: skipped {result['skipped_images']} undecodable image(s) (on_bad_image=skip): "
                + ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))
        trial.write_result(result)
        # the final checkpoint and best.pt are what analyses load; the previous ones only served a resume
        previous_checkpoint(out / CHECKPOINT).unlink(missing_ok=True)
        previous_checkpoint(out / BEST).unlink(missing_ok=True)
    return result


def build_rig(spec: TrialSpec, bundle: Any = None) -> Rig:
    """Seeded so that every method with the same seed starts from the same weights and sees the same data
    order and augmentation draws (except a method that draws its own batches, CS-KD: docs/training.md)."""
    t = spec.train
    rank, world = rank_world()
    device = worker_device(t.device, world)
    if t.threads:
        torch.set_num_threads(t.threads)
    backends = configure_backends(device, deterministic=t.deterministic)
    seed_everything(spec.seed)
    bundle, model, method = build_parts(spec, device, bundle)
    source = init_from(model, t.init_from) if t.init_from else None  # before the optimiser and the EMA see it
    if t.freeze == "backbone":
        freeze_backbone(model)
    step = build_step_rig(t, model, method, device, world)  # draws no random number
    # why: a method that drew numbers from the global generator when built (Zipf's extra layer) must not
    # shift the draws that come later from it (DataLoader augmentation, worker seeds)
    torch.manual_seed(spec.seed + GLOBAL_STREAM)
    fast = t.fast_path and bundle.memory is not None
    generator = torch.Generator(device=device if fast else "cpu")
    generator.manual_seed(spec.seed + LOADER_STREAM)
    method_gen = torch.Generator(device=device)
    method_gen.manual_seed(spec.seed + METHOD_STREAM)
    splits = make_splits(bundle.train_labels, protocol=t.protocol, holdout=t.holdout, holdout_seed=t.holdout_seed)
    fit = splits.fit if splits.select is not None else None
    plan = BatchPlan(bundle.train_labels, t.batch_size, generator, method, rank, world, t.max_steps_per_epoch, fit)
    return Rig(**vars(step), generator=generator, method_gen=method_gen, plan=plan,
               loaders=make_loaders(bundle, spec, plan, splits, device, generator), bundle=bundle,
               select_labels=bundle.val_labels if splits.select is None else bundle.train_labels[splits.select],
               rank=rank, world=world, backends=backends,
               # a worker's slice of a global batch is at most ceil(B / world) (BatchPlan): the gather's fixed size
               gather=partial(gather_update, slots=-(-t.batch_size // world)) if world > 1 else None,
               ema=make_ema(model, t.ema), mixer=make_mixer(t, bundle.num_classes), source=source)

def build_step_rig(t: TrainConfig, model: torch.nn.Module, method: Method, device: torch.device,
                   world: int = 1) -> StepRig:
    """The step's half of a rig, from a model and a method already on `device`: the method's extra modules
    moved there, channels_last and bf16 autocast on CUDA, the optimiser over the model's and the extra
    modules' parameters, in a data-parallel trial (`world` > 1) the forward in DDP with the extra modules,
    and under train.compile the compiled forward (DDP's, when there is one: DDP first, then compile) and loss."""
    from harness.models import MapsForward, StagesForward
    from harness.models import classifier as get_classifier

    if world > 1 and method.data_parallel_refusal:
        raise UserError(f"method {method.name!r} cannot run data-parallel: {method.data_parallel_refusal}")
    extra = method.extra_modules()
    if extra is not None:
        extra.to(device)
    amp = t.amp and device.type == "cuda"
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    # train.compile compiles the whole step for every method: the forward (with the maps a method declared,
    # as one module) and the loss (a method may give a compile-friendly form: Method.compiled_loss)
    step_model, loss_fn = model, method.loss
    if t.compile or world > 1:
        step_model = (MapsForward(model) if method.needs.features
                      else StagesForward(model) if method.needs.stages else model)
    if world > 1:
        step_model = data_parallel(step_model, extra, device)
    if t.compile:
        step_model = torch.compile(step_model)
        loss_fn = method.compiled_loss()
    return StepRig(model=model, step_model=step_model, method=method, loss_fn=loss_fn, extra=extra, params=params,
                   opt=make_optimizer(params, t), classifier=get_classifier(model) if method.needs.features else None,
                   device=device, amp=amp)


def train_epoch(r: Rig, spec: TrialSpec, epoch: int, *, first: bool,
                timing: dict) -> tuple[dict[str, float], float, float]:
    """One epoch of steps: (train_* statistics, seconds spent training, the last step's lr). Adds to `timing`,
    leaving out the first steps of this process (allocator, caches, compilation)."""
    t = spec.train
    steps_per_epoch = len(r.plan)
    warmup_steps = min(3, steps_per_epoch // 4) if first else 0
    r.method.on_epoch_start(epoch, t.epochs)
    r.model.train()
    if t.freeze == "backbone":
        hold_frozen_norms(r.model)
    sums: dict[str, Tensor] = {}
    counts = torch.zeros(2, device=r.device)  # correct, seen
    sync(r.device)
    tick, counted, lr = time.perf_counter(), 0, t.lr
    for i, (x, y, idx) in enumerate(r.loaders.batches()):
        if i == warmup_steps and warmup_steps:
            sync(r.device)
            tick, counted = time.perf_counter(), 0
        xp = None
        if r.method.needs.pairs:  # the batch is cat(anchors, partners)
            half = len(y) // 2
            x, xp, y, idx = x[:half], x[half:], y[:half], idx[:half]
        elif r.method.needs.overlap and len(y) > r.plan.local_batch:  # cat(this batch, the previous one)
            n = r.plan.local_batch
            x, xp, y, yp, idx = x[:n], x[n:], y[:n], y[n:], idx[:n]
        lr = lr_at(epoch * steps_per_epoch + i, steps_per_epoch=steps_per_epoch, lr=t.lr,
                   milestones=t.milestones, gamma=t.gamma, warmup_epochs=t.warmup_epochs, schedule=t.schedule,
                   total_steps=t.epochs * steps_per_epoch)
        ctx = StepContext(epoch=epoch, num_epochs=t.epochs, indices=idx, generator=r.method_gen)
        if xp is not None and r.method.needs.overlap:
            ctx.overlap_targets = yp
        if r.mixer is not None:  # train accuracy counts the first target set (the unflipped labels)
            x, ctx.targets_b, ctx.lam = r.mixer(x, y)
        with no_host_sync(t.sync_debug and r.device.type == "cuda"):
            train_step(model=r.step_model, method=r.method, opt=r.opt, x=x, y=y, xp=xp, ctx=ctx, lr=lr,
                       classifier=r.classifier, amp=r.amp, sums=sums, counts=counts, gather=r.gather,
                       loss_fn=r.loss_fn)
            if r.ema is not None:
                r.ema.update(r.model)
        counted += 1
    sync(r.device)
    seconds = time.perf_counter() - tick
    timing["seconds"] += seconds
    timing["steps"] += counted
    if r.world > 1:
        reduce_epoch(r.method, sums, counts, list(r.model.buffers()))
    r.method.on_epoch_end(epoch)
    seen = counts[1].item()
    stats = {("train_loss" if k == "loss" else f"train_{k}"): v.item() / seen for k, v in sums.items()}
    if not all(math.isfinite(v) for v in stats.values()):
        raise TrialDiverged(f"trial {spec.key()}: the loss became {stats['train_loss']} in epoch "
                            f"{epoch + 1} (method {spec.method}, lr {lr:g}); stopping")
    return {**stats, "train_top1": counts[0].item() / seen}, seconds, lr


def _strip(evaluated: dict[str, float]) -> dict[str, float]:
    """evaluate's val_top1 ... as top1 ... (the caller names the split)."""
    return {k.removeprefix("val_"): v for k, v in evaluated.items()}
