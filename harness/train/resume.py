"""A trial folder's claim and a trial's resume: whose records a folder holds before anything is written, and
the state a checkpoint carries and restores (`trial_state` / `resume`). `r` is the loop's `Rig`
(harness.train.loop), passed in: this module sits below the loop."""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.config.selection import selection_rule
from harness.config.spec import TrialSpec
from harness.errors import UserError
from harness.folders import TrialFolder
from harness.io import write_jsonl
from harness.train.checkpoint import (
    BEST,
    CHECKPOINT,
    load_checkpoint,
    previous_checkpoint,
    read_metrics,
    restore_best,
)
from harness.train.distributed import barrier, broadcast


def claim(trial: TrialFolder, key: str, *, force: bool, log: Callable[[str], None]) -> None:
    """Make sure `trial` holds nothing of another trial or another tool before anything is written: records of
    two trials must never mix (a resume would report the other's epochs as this one's), and files tfbench did
    not write are never replaced."""
    other = trial.foreign_key(key)
    strays = trial.strays(key) if other is None else []
    if other is None and not strays:
        return
    if other is not None and not any((trial / name).exists() for name in trial.RECORDS):
        log(f"{trial.path}: replacing the config of trial {other}, which recorded no epoch")
        return
    held = f"the records of trial {other}" if other else f"files that no tfbench trial wrote ({', '.join(strays)})"
    if not force:
        raise UserError(f"{trial.path} holds {held}, not of {key}; refusing to mix them: give another --out, or "
                        f"--force to move the old folder aside first")
    aside = trial.move_aside(other or "unknown")
    log(f"moved {held} from {trial.path} to {aside} (--force)")


def resume(r: Any, spec: TrialSpec, out: Path, log: Callable[[str], None]) -> tuple[int, dict, dict, list[dict]]:
    """(start epoch, best so far, timing, the epochs' records) from the newest usable checkpoint, or a fresh
    start; the record and the weights must agree, so the checkpoint may be no newer than the intact record."""
    t, lead = spec.train, r.rank == 0
    history = read_metrics(out / TrialFolder.METRICS, log) if t.checkpoint else []
    state = load_checkpoint(out / CHECKPOINT, log, rename=lead, max_epoch=len(history)) if t.checkpoint else None
    if state is not None and t.protocol == "clean" and selection_rule(t.select).reads_split:
        ok = restore_best(out / BEST, state["best"]["epoch"], log, rename=True) if lead else True
        barrier(r.world)  # rank 0 has rolled best.pt back before the others look
        if not lead:
            ok = restore_best(out / BEST, state["best"]["epoch"], log, rename=False)
        state = state if ok else None
    if state is not None and state.get("key", spec.key()) != spec.key():
        raise UserError(f"{out / CHECKPOINT} is a checkpoint of trial {state['key']}, not of {spec.key()}; "
                        f"refusing to resume from it")
    fresh = (0, {"top1": -1.0, "nll": math.inf, "epoch": 0}, {"steps": 0, "seconds": 0.0}, [])
    if state is None:
        if lead:  # a fresh start leaves nothing of an earlier attempt behind, and says so
            if history:
                log(f"starting {spec.key()} from scratch: the record held {len(history)} epoch(s) that no usable "
                    f"checkpoint covers (e.g. killed before the checkpoint was written); they are trained again")
            else:
                log(f"starting {spec.key()} from scratch")
            for name in (TrialFolder.METRICS, BEST, previous_checkpoint(Path(BEST)).name):
                (out / name).unlink(missing_ok=True)
        if r.world > 1:
            broadcast(r.params + list(r.model.buffers()))
        return fresh
    r.model.load_state_dict(state["model"])
    r.opt.load_state_dict(state["optimizer"])
    r.method.load_state_dict(state["method"])
    if r.extra is not None:
        r.extra.load_state_dict(state["extra"])
    if r.ema is not None:
        r.ema.load_state_dict(state["ema"])
    r.generator.set_state(state["rng"]["loader"])
    r.method_gen.set_state(state["rng"]["method"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if lead:  # the metrics file may hold an epoch the checkpoint does not (a kill between the two writes)
        write_jsonl(out / TrialFolder.METRICS, history[:state["epoch"]])
        log(f"resuming {spec.key()} from epoch {state['epoch']}")
    if r.world > 1:
        broadcast(r.params + list(r.model.buffers()))
    return state["epoch"], state["best"], state["timing"], history[:state["epoch"]]


def trial_state(r: Any, spec: TrialSpec, epoch: int, best: dict, timing: dict) -> dict[str, Any]:
    """Everything a resumed trial needs to continue as if uninterrupted: weights, optimiser, method and EMA
    state, the best epoch so far, timing, and every random stream."""
    return dict(model=r.model.state_dict(), optimizer=r.opt.state_dict(), method=r.method.state_dict(),
                extra=r.extra.state_dict() if r.extra is not None else None, epoch=epoch, best=best,
                ema=r.ema.state_dict() if r.ema is not None else None,
                timing=timing, spec=spec.to_dict(), key=spec.key(),
                rng={"loader": r.generator.get_state(), "method": r.method_gen.get_state(),
                     "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()})
