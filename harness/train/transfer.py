"""Transfer: a trial's model initialised from another trial or a checkpoint file (`train.init_from`), and
linear probing (`train.freeze: backbone`).

The source's weights go into the model by name: every tensor of the model but its classifier must be in the
source with the same shape (else the source is another architecture: one line naming the first mismatch); the
classifier is taken too when its shape matches (same class count) and otherwise keeps its fresh, seeded
initialisation ("replaced"). Read as tfbench writes checkpoints (checksummed, `model` inside) or as a plain
`torch.save` file (timm's checkpoints: a state dict, or one under `state_dict_ema`, `state_dict`, `model`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config.resolve import source_checkpoint
from harness.errors import UserError
from harness.train.checkpoint import DamagedCheckpoint, read_checkpoint

# where a plain checkpoint file keeps its weights, by preference (timm's train.py writes the first three)
STATE_KEYS = ("state_dict_ema", "state_dict", "model", "model_state_dict")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_state(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a tfbench checkpoint or a plain torch file, with DDP's `module.` prefix dropped."""
    try:
        raw: Any = read_checkpoint(path, map_location="cpu")
    except DamagedCheckpoint as e:
        if "no checksum trailer" not in str(e):
            raise UserError(f"train.init_from: {path} is damaged ({e})") from None
        try:  # a plain torch.save file (timm's, or a user's): tensors only, no code runs
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  whatever pickle or zipfile raised
            raise UserError(f"train.init_from: cannot read {path} as a checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if isinstance(raw, dict):
        for k in STATE_KEYS:
            if isinstance(raw.get(k), dict):
                raw = raw[k]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UserError(f"train.init_from: {path} holds no state dict (tensors by name; looked under "
                        f"{', '.join(STATE_KEYS)})")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def classifier_names(model: nn.Module) -> set[str]:
    """The state-dict names of the model's classifier (timm's get_classifier())."""
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    for prefix, module in model.named_modules():
        if fc is not None and module is fc:
            return {f"{prefix}.{k}" for k in module.state_dict()}
    return set()


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Copy `state` into `model` (in place): the backbone must match; the classifier is taken when its shapes
    match, else left as initialised. {"loaded": n tensors, "replaced": [classifier names left fresh]}."""
    head = classifier_names(model)
    own = model.state_dict()
    take, replaced = {}, []
    for name, value in own.items():
        src = state.get(name)
        if src is not None and src.shape == value.shape:
            take[name] = src
        elif name in head:
            replaced.append(name)
        else:
            found = "missing" if src is None else f"{tuple(src.shape)}, the model's is {tuple(value.shape)}"
            raise UserError(f"train.init_from: the source does not fit this model: {name} is {found}; "
                            f"allowed: a checkpoint of the same architecture")
    model.load_state_dict(take, strict=False)
    return {"loaded": len(take), "replaced": sorted(replaced)}


def init_from(model: nn.Module, path: str) -> dict[str, Any]:
    """Load `train.init_from` into `model`; what config.json records about the source."""
    weights, config = source_checkpoint(path)
    info = load_backbone(model, source_state(weights))
    return {"path": str(Path(path).expanduser()), "file": str(weights), "sha256": file_sha256(weights),
            "source_key": (config or {}).get("key"), **info}


def freeze_backbone(model: nn.Module) -> int:
    """Linear probing: every parameter but the classifier's stops learning; the trainable count."""
    head = classifier_names(model)
    if not head:
        raise UserError(f"train.freeze: backbone: model {type(model).__name__} names no classifier "
                        f"(timm's get_classifier()); allowed: none")
    trainable = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
        trainable += p.numel() if name in head else 0
    return trainable


def hold_frozen_norms(model: nn.Module) -> None:
    """After `model.train()`: frozen BatchNorm layers keep their statistics (eval mode), as a linear probe's
    backbone is a fixed feature extractor."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def describe_source(source: dict[str, Any] | None, freeze: str) -> str | None:
    """The line a trial starts with when it transfers or probes."""
    frozen = freeze == "backbone"
    if source is None:
        return "training the classifier only (train.freeze: backbone)" if frozen else None
    head = f"classifier replaced ({', '.join(source['replaced'])})" if source["replaced"] else "classifier kept"
    return (f"init_from {source['file']} (trial {source['source_key'] or '-'}, sha256 {source['sha256'][:12]}): "
            f"{source['loaded']} tensors loaded, {head}" + ("; backbone frozen" if frozen else ""))


__all__ = ["describe_source", "file_sha256", "freeze_backbone", "hold_frozen_norms", "init_from", "load_backbone", "source_state"]
