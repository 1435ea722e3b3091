"""Per-image predictions of a trained model: what `trials/<key>/predictions.npz` holds (docs/results.md,
"Per-image predictions"), computed once so that every metric beyond top-1 is recomputed from the file
(harness/results/beyond.py) and new ones need no retraining.

`keep_predictions` is the loop's call at the end of a trial (the weights are in memory); `fill_predictions`
is `tfbench evaluate`'s for a trained folder (the weights from best.pt and checkpoint.pt): it adds only what
the file lacks (the splits, the corruptions asked for, the OOD set asked for). Evaluation runs the model as
the loop's `evaluate` does (eval mode, the same loaders, bf16 autocast where the trial used it), so the
arg-max and the float32 maximum softmax probability kept per image give the record's top-1 and ECE exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.errors import UserError
from harness.io import atomic_write_bytes
from harness.metrics import CORRUPTIONS
from harness.train.checkpoint import BEST, CHECKPOINT, read_checkpoint

FILE = "predictions.npz"
TOP_K, FULL_MAX_CLASSES = 20, 1000  # above 1000 classes only the top 20 logits per image are kept


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device, amp: bool,
            prefix: str, *, features: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one split under `prefix` (test, val, last_test, ...), from (x, y) batches of normalised
    images; with `features` also the penultimate layer's per-class sums (`test_feature_*`)."""
    from harness.models import classifier

    model.eval()
    taken: list[Tensor] = []
    hook = classifier(model).register_forward_pre_hook(lambda _m, inp: taken.append(inp[0])) if features else None
    parts: dict[str, list[Tensor]] = {}
    sums = sq = None
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            logits = logits.float()                                                    # (B, C)
            msp, pred = logits.softmax(1).max(1)
            row = {"targets": y, "pred": pred.int(), "msp": msp, "logsumexp": logits.logsumexp(1)}
            if logits.shape[1] <= FULL_MAX_CLASSES:
                row["logits"] = logits.half()
            else:
                top = logits.topk(TOP_K, dim=1)
                row.update(top_logits=top.values.half(), top_indices=top.indices.int(),
                           target_logits=logits.gather(1, y[:, None])[:, 0])
            for k, v in row.items():
                parts.setdefault(k, []).append(v.cpu())
            if features:
                f = taken.pop().float().flatten(1)                                      # (B, D)
                if sums is None:
                    sums = torch.zeros(logits.shape[1], f.shape[1], dtype=torch.float64, device=device)
                    sq = torch.zeros(logits.shape[1], dtype=torch.float64, device=device)
                sums.index_add_(0, y, f.double())
                sq.index_add_(0, y, (f.double() ** 2).sum(1))
    finally:
        if hook is not None:
            hook.remove()
    base = prefix.removeprefix("last_")
    out = {(f"{base}_targets" if k == "targets" else f"{prefix}_{k}"): torch.cat(v).numpy()
           for k, v in parts.items()}
    out[f"{base}_targets"] = out[f"{base}_targets"].astype(np.int64)
    if sums is not None and sums.shape[0] <= FULL_MAX_CLASSES:
        out[f"{prefix}_feature_sums"], out[f"{prefix}_feature_sqnorms"] = sums.cpu().numpy(), sq.cpu().numpy()
    return out


def write_predictions(trial_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(trial_dir) / FILE, buf.getvalue())


def _xy(loader: Any) -> Iterator[tuple[Tensor, Tensor]]:
    return ((x, y) for x, y, _ in loader)


def keep_predictions(model: torch.nn.Module, loaders: Any, out: Path, *, device: torch.device, amp: bool,
                     holds: str, selected_is_last: bool) -> None:
    """The loop's end: predictions of the weights in `model` (`holds`: "selected" under the clean protocol's
    best.pt, else "last") and of the other weights when the folder has them (the final checkpoint), written
    to `out`/predictions.npz. `model` ends with the weights it came with (in a data-parallel trial only rank 0
    runs this, and every replica must end alike)."""
    if holds == "selected" or selected_is_last:
        arrays = _splits(model, loaders, device, amp, "", features=True)
        if holds == "last":
            arrays.update(_as_last(arrays))
        elif (out / CHECKPOINT).exists():
            came_with = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(read_checkpoint(out / CHECKPOINT, map_location=device)["model"])
            arrays.update(_splits(model, loaders, device, amp, "last_"))
            model.load_state_dict(came_with)
    else:  # the paper protocol's selected weights are not kept: the last epoch's predictions only
        arrays = _splits(model, loaders, device, amp, "last_")
    write_predictions(out, arrays)


def _as_last(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The selected epoch's split arrays under the last epoch's names (when the two epochs are one)."""
    return {f"last_{k}": v for k, v in arrays.items()
            if k.startswith(("test_", "val_")) and not k.endswith("_targets") and "_feature_" not in k}


def _splits(model: torch.nn.Module, loaders: Any, device: torch.device, amp: bool, lead: str, *,
            features: bool = False) -> dict[str, np.ndarray]:
    return {**predict(model, _xy(loaders.test), device, amp, f"{lead}test", features=features),
            **predict(model, _xy(loaders.select), device, amp, f"{lead}val")}


# --- a trained folder: tfbench evaluate -----------------------------------------------------------------

def fill_predictions(trial_dir: Path, *, corruptions: tuple[str, ...], corruption_images: int,
                     ood: dict[str, Any] | None, device: str, have: dict[str, np.ndarray] | None,
                     log: Callable[[str], None] = print) -> dict[str, np.ndarray] | None:
    """What `trial_dir`'s predictions.npz lacks, computed from its checkpoints and written (None when nothing
    was missing). `have`: the file's arrays (None: no file)."""
    have = dict(have or {})
    want_corrupt = bool(corruptions) and (
        str(have.get("corruption_request", "")) != ",".join(corruptions)
        or have["corruption_correct"].shape[2] != _subset_size(have, corruption_images))
    ood_id = _ood_id(ood)
    want_ood = ood is not None and str(have.get("ood_id", "")) != ood_id
    want_splits = "test_targets" not in have
    if not (want_splits or want_corrupt or want_ood):
        return None
    from harness.train.trained import load_trained

    trained = load_trained(trial_dir, device=device, weights="last")
    result = _read_json(trial_dir / "result.json")
    dev, amp = torch.device(device), trained.spec.train.amp and torch.device(device).type == "cuda"
    loaders = _loaders(trained, dev)
    kept_best, selected_is_last = (trial_dir / BEST).exists(), result.get("selected_epoch") == result.get("epochs")
    if want_splits and kept_best:
        have.update(_splits(trained.model, loaders, dev, amp, "last_"))
    if kept_best:
        trained.model.load_state_dict(read_checkpoint(trial_dir / BEST, map_location=dev)["model"])
    elif not selected_is_last:
        log(f"{trial_dir.name}: the selected epoch's weights are not kept (protocol {trained.spec.train.protocol}); "
            f"only the last epoch's predictions are written, without corruptions or OOD scores")
        if want_splits:
            have.update(_splits(trained.model, loaders, dev, amp, "last_"))
        write_predictions(trial_dir, have)
        return have
    model = trained.model  # the selected weights from here on
    if want_splits:
        have.update(_splits(model, loaders, dev, amp, "", features=True))
        if not kept_best:
            have.update(_as_last(have))
    if want_corrupt:
        have.update(corruption_predictions(model, trained.bundle, dev, amp, corruptions, corruption_images))
    if want_ood:
        have.update(ood_predictions(model, trained.bundle, ood, dev, amp), ood_id=np.array(ood_id))
    write_predictions(trial_dir, have)
    return have


def _subset_size(have: dict[str, np.ndarray], images: int) -> int:
    n = len(have.get("test_targets", ()))
    return min(images, n) if images else n


def _ood_id(ood: dict[str, Any] | None) -> str:
    import json

    return "" if ood is None else json.dumps(ood, sort_keys=True, default=str)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _loaders(trained: Any, device: torch.device) -> Any:
    """The trial's test and selection loaders, built as the loop builds them."""
    from harness.train.parts import BatchPlan, make_loaders
    from harness.train.splits import make_splits

    spec, bundle = trained.spec, trained.bundle
    t = spec.train
    splits = make_splits(bundle.train_labels, protocol=t.protocol, holdout=t.holdout, holdout_seed=t.holdout_seed)
    fast = t.fast_path and bundle.memory is not None
    gen = torch.Generator(device=device if fast else "cpu")
    plan = BatchPlan(bundle.train_labels, t.batch_size, gen, trained.method, 0, 1, t.max_steps_per_epoch,
                     splits.fit if splits.select is not None else None)
    return make_loaders(bundle, spec, plan, splits, device, gen)


def raw_images(bundle: Any, batch: int = 512) -> Iterator[tuple[Tensor, Tensor]]:
    """The evaluation split as uint8 (B, C, H, W) batches: the in-memory tensors, or a file set's evaluation
    transform undone (x * std + mean, rounded), i.e. the pixels the model sees, before normalisation."""
    if bundle.memory is not None:
        x, y = bundle.memory.val_x, bundle.memory.val_y
        for s in range(0, len(y), batch):
            yield x[s:s + batch], y[s:s + batch]
        return
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    for x, y, *_ in torch.utils.data.DataLoader(bundle.val, batch_size=batch, shuffle=False):
        yield ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8), y


def _normalised(batches: Iterable[tuple[Tensor, Tensor]], bundle: Any, device: torch.device):
    from harness.data.fast import normalise

    mean = torch.tensor(bundle.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(bundle.std, dtype=torch.float32, device=device).view(-1, 1, 1)
    return ((normalise(x.to(device), mean, std), y) for x, y in batches)


def corruption_predictions(model: torch.nn.Module, bundle: Any, device: torch.device, amp: bool,
                           names: tuple[str, ...], images: int) -> dict[str, np.ndarray]:
    """`corruption_correct` (K, 5, M) bool: whether each of the first M test images (all when `images` is 0) is
    classified right under each corruption and severity 1..5; `corruption_names` (K,)."""
    from harness.data.corruptions import SEVERITIES, available, corrupt

    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise UserError(f"unknown corruption(s) {', '.join(unknown)}; allowed: {', '.join(CORRUPTIONS)} or all")
    xs, ys = zip(*raw_images(bundle), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    asked, names = names, tuple(n for n in names if n in available(x.shape[1]))  # saturate needs colour
    m = min(images, len(y)) if images else len(y)
    x, y = x[:m], y[:m]
    model.eval()
    correct = np.zeros((len(names), len(SEVERITIES), m), dtype=bool)
    for i, name in enumerate(names):
        for j, severity in enumerate(SEVERITIES):
            bad = corrupt(x, name, severity)
            batches = ((bad[s:s + 512], y[s:s + 512]) for s in range(0, m, 512))
            got = predict(model, _normalised(batches, bundle, device), device, amp, "c")
            correct[i, j] = got["c_pred"] == got["c_targets"]
    return {"corruption_names": np.array(names), "corruption_correct": correct,
            "corruption_request": np.array(",".join(asked))}


def ood_predictions(model: torch.nn.Module, bundle: Any, ood: dict[str, Any], device: torch.device,
                    amp: bool) -> dict[str, np.ndarray]:
    """`ood_msp` and `ood_logsumexp` of the OOD set's evaluation split, normalised as the trained data set."""
    from harness.data import build_dataset

    other = build_dataset(ood["name"], dict(ood.get("params") or {}))
    if (other.in_chans, other.input_size) != (bundle.in_chans, bundle.input_size):
        raise UserError(f"evaluate.ood: {ood['name']} has {other.in_chans}-channel {other.input_size}px images; "
                        f"the model takes {bundle.in_chans}-channel {bundle.input_size}px ones (set its params to "
                        f"match)")
    got = predict(model, _normalised(raw_images(other), bundle, device), device, amp, "ood")
    return {"ood_msp": got["ood_msp"], "ood_logsumexp": got["ood_logsumexp"], "ood_name": np.array(ood["name"])}
