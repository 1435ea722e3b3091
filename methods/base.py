"""The one interface every method implements.

A method sees tensors and a small step context, never the harness. It declares what it needs
(`Needs`), and the harness computes only that: a method without `features` costs nothing extra.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .params import check_params, type_name
from .registry import Registry


def register(name: str):
    """Register a `Method` subclass under `name`: `@register("zipf")`."""
    return METHODS.register(name)


class MethodParamError(ValueError):
    """A bad hyper-parameter; the message names the method and the parameter."""


@dataclass(frozen=True)
class Needs:
    features: bool = False  # final + previous-stage feature maps and the model's classifier
    indices: bool = False   # dataset index of every sample in the batch
    pairs: bool = False     # class-paired batches; the harness calls `pair_batches`
    epoch: bool = False     # epoch hooks matter (the harness always calls them; this documents intent)
    stages: bool = False    # every intermediate stage's map (BYOT's auxiliary heads): ctx.stage_maps
    batches: bool = False   # the method composes each epoch's index batches: `compose_batches` (DLB, BAKE)
    overlap: bool = False   # a composed batch's second part is forwarded apart, with gradient (DLB):
                            # ctx.overlap_logits, ctx.overlap_targets


@dataclass
class StepContext:
    """What the harness hands to `Method.loss` for one batch (only the fields the method declared)."""

    epoch: int = 0                            # 0-based
    num_epochs: int = 1
    indices: Tensor | None = None             # (B,) long, dataset indices
    final_map: Tensor | None = None           # (B, D, H, W): the map global pooling turns into the head input
    prev_map: Tensor | None = None            # (B, D', H', W'): the previous stage's map
    classifier: nn.Module | None = None       # the model's final nn.Linear (weight (C, D), bias (C,))
    partner_logits: Tensor | None = None      # (B, C), train-mode, no grad: CS-KD partners
    generator: torch.Generator | None = None  # seeded, on the logits' device, for random draws
    stage_maps: tuple[Tensor, ...] | None = None  # needs.stages: (B, D_s, H_s, W_s) per intermediate stage
    overlap_logits: Tensor | None = None      # needs.overlap: (B', C) with gradient, the batch's second part
    overlap_targets: Tensor | None = None     # (B',) labels of that part
    # mixup/CutMix (train.mixup, train.cutmix): the partner targets and the mixing weight of a mixed batch,
    # else None. A method with `mixes_targets` reads them; every other gets the mixed criterion from the harness.
    targets_b: Tensor | None = None           # (B,) long: the labels of the images mixed in
    lam: Tensor | None = None                 # () float: the weight of `targets` (timm's lam)


@dataclass(frozen=True)
class NoParams:
    pass


class Method:
    """Base class. Subclasses set `Params` (a dataclass) and `needs`, and implement `loss`.

    What the harness shows and presets about a method is declared here too, beside its math (as timm keeps
    a model's `default_cfgs` beside the model): `label` and `color` in tables and figures, `order` among the
    methods of a table, `recipe` (its authors' training recipe, by name: harness/config/presets.py), and
    `preset(dataset, model)`, the parameter values its authors used there (a sweep's or --set's values win;
    `dataset` carries the data set's traits, e.g. its resolution class: methods/traits.py).
    """

    name: ClassVar[str] = "?"
    Params: ClassVar[type] = NoParams
    needs: ClassVar[Needs] = Needs()
    label: ClassVar[str] = ""              # display name; '' = the registered name
    color: ClassVar[str | None] = None     # a matplotlib colour; None = the next free palette colour
    order: ClassVar[int] = 100             # position in tables (the built-ins: the paper's order, 0..6)
    recipe: ClassVar[str] = "zipf"         # the training recipe of its official code (informational)
    # why a data-parallel trial cannot run this method ('' = it can): one line, shown as the refusal
    data_parallel_refusal: ClassVar[str] = ""

    # Under mixup/CutMix: False (every built-in) = the harness calls `loss` with each target set and mixes the
    # parts, lam * L(y_a) + (1 - lam) * L(y_b); True = `loss` is called once and reads ctx.targets_b, ctx.lam.
    mixes_targets: ClassVar[bool] = False

    # The attributes that hold the method's per-data state (tensors, or None until first used): saved in
    # checkpoints under these names, restored there, moved by `to`. Why not an nn.Module with buffers: its
    # state_dict would also hold `extra_modules()` (saved on their own, with the optimiser) and rename
    # every checkpoint's keys.
    state: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def preset(cls, dataset: str, model: str) -> dict[str, Any]:
        """Parameter values its authors used for `dataset` / `model` (applied before the Params defaults).
        `dataset` is the data set's name as a `methods.traits.DataSet`: a str that also carries its traits."""
        return {}

    def __init__(
        self,
        params: Any = None,
        *,
        num_classes: int,
        num_train: int = 0,
        feature_channels: tuple[int, int] | None = None,  # (final D, previous stage D')
        stages: tuple[tuple[int, int], ...] | None = None,  # (channels, reduction) per feature tap, stem first
        check: bool = True,
    ):
        """`check=False`: `params` were checked when the trial was resolved (`Method.check` with this class
        count), so the harness does not check them again on every worker."""
        self.params = params if params is not None else self.Params()
        self.num_classes = int(num_classes)
        self.num_train = int(num_train)
        self.feature_channels = feature_channels
        self.stages = stages
        self.device = torch.device("cpu")  # where `to` put the method's state and modules
        if check:
            self._check_choices()
            self.validate()

    # --- hyper-parameters -------------------------------------------------------------------
    @classmethod
    def check(cls, params: Any, *, num_classes: int | None) -> None:
        """`validate` on typed `params` without building the method (no modules, no state): what a trial's
        resolution runs. `num_classes` None (not known before the data is read) skips the checks that need it."""
        probe = cls.__new__(cls)
        probe.params, probe.num_classes, probe.num_train, probe.feature_channels = params, num_classes, 0, None
        probe.stages, probe.device = None, torch.device("cpu")
        probe.validate()

    def validate(self) -> None:
        """Raise `MethodParamError` (via `self.fail`) for a bad value. Called when a trial is resolved
        (`Method.check`) and when a method is built by hand; `self.num_classes` may be None (unknown yet)."""

    def fail(self, param: str, message: str) -> typing.NoReturn:
        raise MethodParamError(f"method {self.name!r}: parameter {param!r} {message}")

    def _check_choices(self) -> None:
        # `make_params` validates dicts; this also covers `Params(...)` built by hand (a bad Literal, a str)
        if dataclasses.is_dataclass(self.params) and not isinstance(self.params, type):
            _, problems = check_params(type(self.params), dataclasses.asdict(self.params))
            if problems:
                raise MethodParamError(" | ".join(param_problem(self.name, loc, what) for loc, what in problems))

    # --- the step ---------------------------------------------------------------------------
    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """Return {"loss": total, <part>: value, ...} for one batch. logits (B, C), targets (B,)."""
        raise NotImplementedError

    def compiled_loss(self, mode: str | None = None) -> Callable[[Tensor, Tensor, StepContext], dict[str, Tensor]]:
        """`loss` for a compiled run (`train.compile`). By default `loss` compiled as one graph (fullgraph: a
        graph break is an error) per shape, the float parameters read as tensors so that a new value reuses
        the graph (`methods.compiled.compiled_method_loss`). A loss that reads `ctx.epoch` or draws random
        numbers overrides this: Zipf's LS swaps its few-FLOPs eager form for static-shape regions and draws its
        random priors outside them; PS-KD returns its eager `loss`. `mode` is torch.compile's
        (`"reduce-overhead"` adds CUDA-graph capture)."""
        from .compiled import compiled_method_loss

        return compiled_method_loss(self, mode)

    def extra_modules(self) -> nn.Module | None:
        """Trainable modules the method adds (optimised with the model, saved in checkpoints)."""
        return None

    def pair_batches(self, labels: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """For `needs.pairs`: yield (anchor indices, partner indices) for one epoch."""
        raise NotImplementedError

    def compose_batches(self, labels: Tensor, batch_size: int, generator: torch.Generator
                        ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """For `needs.batches`: yield one epoch's (first part, second part or None) of position batches, at most
        `steps_per_epoch` of them (the harness stops pulling there). The loader yields cat(first, second)."""
        raise NotImplementedError

    def steps_per_epoch(self, num_samples: int, batch_size: int) -> int:
        """Steps of one epoch: full batches only (the last partial one is dropped)."""
        return num_samples // batch_size

    # --- hooks ------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        pass

    def on_step_end(self) -> None:
        """Called after the optimiser step (PS-KD writes its table here)."""

    def pending_update(self) -> tuple[Tensor, Tensor] | None:
        """Data-parallel training: this worker's per-sample update of the last step, handed over and
        forgotten, as (indices (B,), values (B, ...)); None if the method keeps no per-sample state.

        After every optimiser step of a data-parallel trial the harness takes this on every worker, gathers
        all workers' pairs and calls `apply_update` with them, then calls `on_step_end` (which should then
        find nothing pending). Single-process trials only call `on_step_end`. Must return None on every
        worker or on none (the gather is collective)."""
        return None

    def apply_update(self, indices: Tensor, values: Tensor) -> None:
        """Apply per-sample updates gathered from all workers (see `pending_update`)."""

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def epoch_sums(self) -> list[Tensor]:
        """Accumulators that data-parallel workers must sum (in place) before `on_epoch_end` (OLS's)."""
        return []

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The declared `state` attributes that hold a tensor, by name."""
        return {k: v for k in self.state if (v := getattr(self, k)) is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Each saved tensor onto the method's device, as a copy; in the dtype and shape of the tensor it
        replaces, where there is one (a checkpoint of another data set or class count is refused)."""
        for k in self.state:
            if k not in state:
                continue
            saved, current = state[k], getattr(self, k)
            if isinstance(current, Tensor):
                if tuple(saved.shape) != tuple(current.shape):
                    raise ValueError(f"method {self.name!r}: checkpoint {k} has shape {tuple(saved.shape)}, "
                                     f"expected {tuple(current.shape)}")
                saved = saved.to(dtype=current.dtype)
            setattr(self, k, saved.to(self.device).clone())

    def state_nbytes(self) -> int:
        """Bytes of state that scales with the data (PS-KD's table, OLS's matrix); 0 if none."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values() if isinstance(t, Tensor))

    def to(self, device: torch.device | str) -> Method:
        """The declared state and `extra_modules()` onto `device` (the model is moved by the harness)."""
        self.device = torch.device(device)
        for k in self.state:
            if isinstance(v := getattr(self, k), Tensor):
                setattr(self, k, v.to(self.device))
        if (extra := self.extra_modules()) is not None:
            extra.to(self.device)
        return self


def _load_builtins() -> None:
    from methods import load_builtins

    load_builtins()


METHODS = Registry("method", base=Method, load=_load_builtins)


# --- construction and listing -------------------------------------------------------------------

def param_fields(cls: type[Method]) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls.Params))


def make_params(cls: type[Method], values: dict[str, Any] | None) -> Any:
    """Build `cls.Params` from a plain dict through the strict pydantic model of the dataclass
    (`methods.params`): unknown keys and wrong types are one error naming every problem."""
    resolved, problems = check_params(cls.Params, dict(values or {}))
    if problems:
        raise MethodParamError(" | ".join(param_problem(cls.name, loc, what) for loc, what in problems))
    return cls.Params(**resolved)


def param_problem(method: str, loc: tuple, what: str) -> str:
    """'method 'zipf': unknown parameter 'alpah' (did you mean 'alpha'?); allowed: ...' or
    'method 'zipf': parameter 'lam' is 'x'; allowed: a number'."""
    key = loc[0] if loc else "?"
    if what.startswith("unknown key"):
        return f"method {method!r}: unknown parameter {key!r}{what[len('unknown key'):]}"
    return f"method {method!r}: parameter {key!r} {'is ' + what[6:] if what.startswith('found ') else what}"


def build_method(name: str, params: dict[str, Any] | None = None, *, trusted: bool = False, **context: Any) -> Method:
    """The one factory: `build_method("zipf", {"lam": 0.1}, num_classes=100, ...)`. `trusted`: the params
    come from a resolved trial (every field present, checked then): built as they are, not checked again."""
    cls = METHODS.get(name)
    if trusted:
        return cls(cls.Params(**dict(params or {})), check=False, **context)
    return cls(make_params(cls, params), **context)


def describe_methods() -> list[tuple[str, list[tuple[str, str, Any]]]]:
    """[(name, [(param, type, default), ...]), ...] for `tfbench methods`."""
    rows = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        hints = typing.get_type_hints(cls.Params)
        fields_ = []
        for f in param_fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            fields_.append((f.name, _type_name(hints.get(f.name)), default))
        rows.append((name, fields_))
    return rows


_type_name = type_name


__all__ = [
    "METHODS", "Method", "MethodParamError", "Needs", "NoParams", "StepContext",
    "build_method", "describe_methods", "field", "make_params", "register",
]
