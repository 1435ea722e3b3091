"""From a TrialSpec to what the loop runs: dataset, model and method (`build_parts`, shared with
`load_trained`), the epoch's index batches (`BatchPlan`) and the loaders of the protocol's three splits."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.config.resolve import check_batch_fits
from harness.config.spec import TrialSpec
from harness.errors import UserError
from harness.train.splits import Splits
from methods import METHODS, Method, build_method, load_user_module


def build_parts(spec: TrialSpec, device: torch.device, bundle: Any = None):
    """Dataset, model and method of a spec. Seeded by the caller; the model is built before the method, so
    a method that draws random numbers when built (Zipf's extra layer) leaves the model's initial weights
    equal to every other method's under the same seed."""
    from harness.data import DATASETS, build_dataset
    from harness.models import create_model, feature_channels, stage_info

    for ref in spec.imports:
        load_user_module(ref)
    if bundle is None:  # else built once by a data-parallel trial's driver for all its workers
        bundle = build_dataset(spec.dataset, dict(spec.dataset_params))
    model = create_model(spec.model, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                         input_size=bundle.input_size, **spec.model_params)
    try:  # a method's needs may depend on its parameters, so every method is told the channel counts
        channels = feature_channels(model)
    except (UserError, AttributeError, KeyError, IndexError, TypeError):
        channels = None  # a model without stage information: methods that need maps will say so
    stages = None
    if METHODS.get(spec.method).needs.stages:  # asked only where needed: the seven never read it
        try:
            stages = stage_info(model)
        except (AttributeError, KeyError, TypeError):
            stages = None  # the method says what it misses
    # num_train is the whole training split: indices stay the dataset's own under both protocols. The params
    # were checked when the trial was resolved; only a class count read from the files is checked here.
    method = build_method(spec.method, dict(spec.method_params), trusted=True, num_classes=bundle.num_classes,
                          num_train=len(bundle.train_labels), feature_channels=channels,
                          **({"stages": stages} if stages is not None else {}))
    data_cls = DATASETS.get(spec.dataset)
    if data_cls.class_count(data_cls.Params(**spec.dataset_params)) is None:
        method.validate()
    return bundle, model.to(device), method.to(device)


class BatchPlan(torch.utils.data.Sampler):
    """The index batches of one epoch: a seeded permutation of the fitted samples cut into global batches of
    `batch_size`, each worker keeping its slice `[rank::world]`. For a paired method (CS-KD) the method's
    sampler picks (anchor, partner) batches and a batch is `cat(anchors, partners)`, 2B indices; a method that
    composes its batches (`needs.batches`: DLB's overlap with the previous batch, BAKE's class groups) yields
    (first, second or None) parts the same way, as many steps as its `steps_per_epoch`.

    Every batch has `batch_size` samples: the last, partial batch of an epoch is dropped (floor(N / B) steps),
    so a compiled step sees one static shape (a smaller batch would compile a second graph, and then every
    step would run a dynamic one). The permutation changes every epoch, so every sample is still trained on.

    `fit` (clean protocol) maps positions among the fitted samples back to the training split's indices,
    so methods keyed on the sample index (PS-KD) see the dataset's own indices under both protocols."""

    def __init__(self, labels: Tensor, batch_size: int, generator: torch.Generator, method: Method,
                 rank: int = 0, world: int = 1, max_steps: int = 0, fit: Tensor | None = None):
        self.generator, self.method = generator, method
        self.fit = None if fit is None else fit.to(generator.device)
        self.labels = labels if fit is None else labels[fit.to(labels.device)]
        self.batch_size, self.rank, self.world, self.max_steps = batch_size, rank, world, max_steps
        check_batch_fits(batch_size, len(self.labels))

    def __len__(self) -> int:
        n = len(self.labels) // self.batch_size  # the partial batch is dropped
        if self.method.needs.batches:
            n = self.method.steps_per_epoch(len(self.labels), self.batch_size)
        return min(n, self.max_steps) if self.max_steps else n

    @property
    def local_batch(self) -> int:
        """Samples of this worker's slice of a batch's first part (of a plain batch: of the whole batch)."""
        return len(range(self.rank, self.batch_size, self.world))

    def __iter__(self) -> Iterator[Tensor]:
        device = self.generator.device
        if self.method.needs.pairs:
            batches = ((a, p) for a, p in self.method.pair_batches(self.labels.to(device), self.batch_size,
                                                                   self.generator))
        elif self.method.needs.batches:
            batches = self.method.compose_batches(self.labels.to(device), self.batch_size, self.generator)
        else:
            perm = torch.randperm(len(self.labels), generator=self.generator, device=device)
            batches = ((perm[s:s + self.batch_size], None) for s in range(0, len(perm), self.batch_size))
        # islice pulls no batch past the last step: a method that remembers what it yielded (DLB) stays exact
        for anchors, partners in itertools.islice(batches, len(self)):
            local = anchors[self.rank::self.world]
            if partners is not None:
                local = torch.cat([local, partners[self.rank::self.world]])
            yield local if self.fit is None else self.fit[local]


@dataclass
class Loaders:
    """`batches()` iterates one training epoch of (x, y, idx), device-ready (on the device, x normalised);
    `select` is the split the epoch is selected on (clean: held-out validation; paper: the evaluation split);
    `test` is the evaluation split. Both yield device-ready batches too."""

    batches: Callable[[], Iterator[tuple]]
    select: Any
    test: Any


def make_loaders(bundle: Any, spec: TrialSpec, plan: BatchPlan, splits: Splits, device: torch.device,
                 generator: torch.Generator) -> Loaders:
    """In-memory sets take the fast path: each split is one tensor on the device and augmentation runs
    there, batched. Sets of files take the device path (`bundle.files`): workers decode and size each image as
    uint8, and the crop with padding, flip and normalisation run on the device (`fast.DeviceLoader`);
    `train.fast_path: false` keeps the torchvision path (everything in the workers, float batches). The
    held-out split is a Subset of the unaugmented train_eval."""
    from harness.data.fast import DeviceLoader, TensorLoader
    from harness.train.device import no_host_sync
    from harness.train.recipes import with_augment

    t, mem = spec.train, bundle.memory
    eval_batch = max(t.batch_size, 256)
    cuda = device.type == "cuda"
    # train.augment runs per sample on the host (timm's way): an in-memory set then takes the torchvision path
    if t.fast_path and mem is not None and t.augment == "none":
        common = dict(device=device, mean=bundle.mean, std=bundle.std, channels_last=device.type == "cuda")
        train = TensorLoader(mem.train_x, mem.train_y, batch_size=t.batch_size, shuffle=True, drop_last=True,
                             generator=generator, crop_padding=mem.crop_padding, flip=mem.flip, **common)
        test = TensorLoader(mem.val_x, mem.val_y, batch_size=eval_batch, shuffle=False,
                            drop_last=False, generator=generator, **common)
        select = test
        if splits.select is not None:  # train.x is already on the device: no second copy
            select = TensorLoader(train.x, train.y, batch_size=eval_batch, shuffle=False, drop_last=False,
                                  generator=None, indices=splits.select, **common)
        return Loaders(batches=lambda: (train.batch(idx) for idx in plan), select=select, test=test)
    files = bundle.files if t.fast_path else None
    src = files or bundle  # the uint8 splits of the device path, or the torchvision path's float ones

    def device_loader(dataset: Any, augment: bool, **kw: Any) -> DeviceLoader:
        # pinned batches cross non-blocking; persistent workers keep their start-up out of every epoch
        loader = torch.utils.data.DataLoader(dataset, num_workers=t.num_workers, pin_memory=cuda,
                                             persistent_workers=t.num_workers > 0, **kw)
        return DeviceLoader(loader, device=device, mean=bundle.mean, std=bundle.std, generator=generator,
                            crop_padding=files.crop_padding if files and augment else 0,
                            flip=bool(files and augment and files.flip), channels_last=cuda,
                            guard=lambda: no_host_sync(t.sync_debug and cuda))

    train = device_loader(with_augment(src.train, t.augment), True, batch_sampler=_ListPlan(plan))
    test = device_loader(src.val, False, batch_size=eval_batch, shuffle=False)
    select = test
    if splits.select is not None:
        held = torch.utils.data.Subset(src.train_eval, splits.select.tolist())
        select = device_loader(held, False, batch_size=eval_batch, shuffle=False)
    return Loaders(batches=lambda: iter(train), select=select, test=test)


class _ListPlan(torch.utils.data.Sampler):
    def __init__(self, plan: BatchPlan):
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[list[int]]:
        return (idx.tolist() for idx in self.plan)
