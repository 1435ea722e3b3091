"""A complete custom data set: `tfbench datasets --import docs/examples/my_dataset.py` lists and checks it, and
a sweep file uses it with `imports: [docs/examples/my_dataset.py]` and `datasets: [{name: bars}]`.

Bars: 2 classes of 16x16 grey images, horizontal or vertical stripes with noise, generated in memory (so
it needs no root). A data set of files would set `needs_root = True` (the default), a `layout`, a `problem`
classmethod, and build with `harness.data.registry.file_bundle` instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.registry import LOW, DataBundle, DatasetDef, in_memory_bundle, register_dataset


@register_dataset("bars")
class Bars(DatasetDef):
    """Horizontal against vertical stripes (16x16, 1 channel)."""

    layout = "generated in memory (no files)"
    needs_root = False
    in_memory = True
    known_classes = 2
    default_model, default_epochs, resolution = "tiny_cnn", 10, LOW  # the facts a trial defaults from

    @dataclass(frozen=True)
    class Params:  # every field has a default; sweeps set them under params:
        per_class: int = 64
        noise: float = 0.3
        seed: int = 0

    @classmethod
    def train_images(cls, p: Any) -> int | None:  # a classmethod, like every hook but build
        return 2 * p.per_class

    def build(self, p: Any, root: Path | None) -> DataBundle:  # the one ordinary method
        import torch

        g = torch.Generator().manual_seed(p.seed)

        def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.arange(2 * n) % 2                                        # (2n,)
            rows = (torch.arange(16) % 4 < 2).float()                          # (16,)
            img = torch.where(y[:, None, None] == 0, rows[None, :, None].expand(-1, 16, 16),
                              rows[None, None, :].expand(-1, 16, 16))          # (2n, 16, 16)
            img = (img + p.noise * torch.randn(img.shape, generator=g)).clamp(0, 1)
            return (img * 255).round().to(torch.uint8)[:, None], y            # (2n, 1, 16, 16), (2n,)

        (tx, ty), (vx, vy) = split(p.per_class), split(p.per_class // 2)
        return in_memory_bundle(name="bars", classes=["horizontal", "vertical"], train_x=tx, train_y=ty,
                                val_x=vx, val_y=vy, mean=(0.5,), std=(0.35,), crop_padding=0, flip=False, root=None)
