"""Be Your Own Teacher (`byot`; Zhang et al., ICCV 2019): auxiliary classifiers on the intermediate stages,
trained with the model and taught by its final classifier.

Against the official code (ArchipLab-LinfengZhang/pytorch-self-distillation-final, train.py and resnet.py):
- Each intermediate stage map gets an attention mask (a SepConv of stride 2, bilinear upsampling back to the
  map's size, a sigmoid) that multiplies the map, then one SepConv per later stage (stride 2 where that stage
  halves the resolution, the channels of that stage), global average pooling and a Linear classifier. The
  official heads are written for ResNets (three SepConvs from layer1, two from layer2, one from layer3, each
  of stride 2); here the chain follows the model's own stages (`Method.stages`, from `feature_info`).
- Loss: CE of the final classifier, plus for every auxiliary head `coefficient * soft CE(aux / T, final / T)`
  (a cross-entropy with the detached final logits as teacher, not a KL, and no T^2) plus
  `(1 - coefficient) * CE(aux)`. The paper's L2 feature hints are not in the official code, nor here.
- The official test reports each head and their ensemble; the harness evaluates the model, i.e. the final
  classifier ("4/4"), so the auxiliary heads are a training-time cost only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Method, Needs, StepContext, register


def byot_parts(*, logits: Tensor, aux_logits: list[Tensor], targets: Tensor, temperature: float | Tensor,
               coefficient: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(total, CE of the final head, sum of the heads' CE, sum of their soft CE). logits and each aux (B, C)."""
    z = logits.float()
    ce = F.cross_entropy(z, targets)
    teacher = F.softmax(z.detach() / temperature, dim=1)  # (B, C)
    aux_ce, soft = z.new_zeros(()), z.new_zeros(())
    for a in aux_logits:
        soft = soft - (teacher * F.log_softmax(a.float() / temperature, dim=1)).sum(dim=1).mean()
        aux_ce = aux_ce + F.cross_entropy(a.float(), targets)
    return ce + coefficient * soft + (1.0 - coefficient) * aux_ce, ce, aux_ce, soft


def sep_conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """The official SepConv: depthwise 3x3 (stride), pointwise, BN, ReLU, depthwise 3x3, pointwise, BN, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_in, 1, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(),
        nn.Conv2d(c_in, c_in, 3, stride=1, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class AuxHead(nn.Module):
    """attention(x) * x -> SepConvs down to the final stage -> global average pool -> Linear."""

    def __init__(self, chain: list[tuple[int, int]], num_classes: int):
        """`chain`: (channels, reduction) of this stage, then of every later stage to the final map."""
        super().__init__()
        c0 = chain[0][0]
        self.attention = sep_conv(c0, c0, 2)
        self.convs = nn.Sequential(*[sep_conv(c_in, c_out, max(1, r_out // r_in))
                                     for (c_in, r_in), (c_out, r_out) in zip(chain, chain[1:], strict=False)])
        self.fc = nn.Linear(chain[-1][0], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # official: nn.Upsample(scale_factor=2); to the map's own size here, which is that for even sizes
        mask = torch.sigmoid(F.interpolate(self.attention(x), size=x.shape[-2:], mode="bilinear"))
        return self.fc(self.convs(mask * x).mean(dim=(2, 3)))  # (B, C)


@register("byot")
class BYOT(Method):
    """L = CE(z) + sum_heads [coefficient * softCE(a / T, z / T) + (1 - coefficient) * CE(a)]."""

    needs = Needs(stages=True)
    label, color, order, recipe = "BYOT", "#e377c2", 10, "byot"
    data_parallel_refusal = "its stage maps do not come through the data-parallel wrapper's forward yet"

    @dataclass(frozen=True)
    class Params:
        temperature: float = 3.0
        coefficient: float = 0.3

    def __init__(self, params: Any = None, **context: Any):
        super().__init__(params, **context)
        if self.stages is None or len(self.stages) < 3:
            self.fail("coefficient", "needs a model with at least one stage between the stem and the final map "
                                     "(feature_info)")
        taps = list(self.stages)
        self.heads = nn.ModuleList([AuxHead(taps[i:], self.num_classes) for i in range(1, len(taps) - 1)])

    def validate(self) -> None:
        if not self.params.temperature > 0:
            self.fail("temperature", f"must be > 0, got {self.params.temperature}")
        if not 0.0 <= self.params.coefficient <= 1.0:
            self.fail("coefficient", f"must be in [0, 1], got {self.params.coefficient}")

    def extra_modules(self) -> nn.Module:
        return self.heads

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.stage_maps is None or len(ctx.stage_maps) != len(self.heads):
            raise ValueError(f"method 'byot' needs ctx.stage_maps, one map per auxiliary head ({len(self.heads)})")
        aux = [head(m) for head, m in zip(self.heads, ctx.stage_maps, strict=True)]
        total, ce, aux_ce, soft = byot_parts(logits=logits, aux_logits=aux, targets=targets,
                                             temperature=self.params.temperature, coefficient=self.params.coefficient)
        return {"loss": total, "ce": ce.detach(), "aux_ce": aux_ce.detach(), "kd": soft.detach()}
