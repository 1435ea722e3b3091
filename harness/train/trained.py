"""Loading a trained trial (analyses, landscapes): the one reader of a trial folder's weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.config.spec import TrialSpec
from harness.errors import UserError
from harness.train.checkpoint import BEST, CHECKPOINT, DamagedCheckpoint, read_checkpoint
from harness.train.parts import build_parts
from methods import Method


@dataclass
class Trained:
    model: torch.nn.Module
    method: Method
    bundle: Any
    spec: TrialSpec
    trial_dir: Path


def load_trained(trial_dir: str | Path, device: str = "cpu", weights: str = "last") -> Trained:
    """The trial's model and method in eval mode. weights="last": the final checkpoint (model, method
    state, extra modules); "selected": the clean protocol's selected epoch (best.pt holds the model only,
    so the method's state and extra modules stay those of the last epoch)."""
    if weights not in ("last", "selected"):
        raise UserError(f"weights is {weights!r}; allowed: last, selected")
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
    model.load_state_dict(_selected(trial_dir, device)["model"] if weights == "selected" else state["model"])
    method.load_state_dict(state["method"])
    extra = method.extra_modules()
    if extra is not None and state.get("extra") is not None:
        extra.load_state_dict(state["extra"])
    model.eval()
    return Trained(model=model, method=method, bundle=bundle, spec=spec, trial_dir=trial_dir)


def _selected(trial_dir: Path, device: str) -> dict[str, Any]:
    path = trial_dir / BEST
    if not path.exists():
        raise UserError(f"{trial_dir}: no {BEST} (only trials run with train.protocol: clean keep the selected "
                        f"epoch's weights); use the last weights")
    try:
        return read_checkpoint(path, map_location=device)
    except DamagedCheckpoint as e:
        raise UserError(f"{path} is damaged ({e}); delete {trial_dir} and rerun its sweep to retrain it") from None
