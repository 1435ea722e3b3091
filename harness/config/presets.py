"""Training presets: the official recipes, by name (values of the training settings).

Each data set's defaults (model, epochs, held-out split, recipe, resolution class) live on its class
(`harness.data.DatasetDef`), and a method's own parameter presets per data set and model on the method
(`Method.preset`, which sees the data set's traits). Order of precedence when a trial is resolved: explicit
value (sweep file or --set) > dataset_defaults > the method's preset > its Params defaults; for training
settings: explicit > the recipe > the data set's default.
"""
from __future__ import annotations

from harness.config.spec import TrainSettings

# Training recipes of the official repositories (METHODS.md, "Training recipes"): values of the training
# settings. Milestones are fractions of the run so that short runs keep the schedule's shape.
RECIPES: dict[str, TrainSettings] = {
    # Zipf's LS and CS-KD: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, x0.1 at 50% and 75%.
    "zipf": TrainSettings(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, batch_size=128,
                          milestones=(0.5, 0.75), gamma=0.1, warmup_epochs=0),
    # PS-KD and OLS: nesterov, wd 5e-4, x0.1 at epochs 150 and 225 of 300.
    "pskd": TrainSettings(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True, batch_size=128,
                          milestones=(0.5, 0.75), gamma=0.1, warmup_epochs=0),
    # TF-KD: wd 5e-4, x0.2 at epochs 60, 120, 160 of 200, one warm-up epoch.
    "tfkd": TrainSettings(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False, batch_size=128,
                          milestones=(0.3, 0.6, 0.8), gamma=0.2, warmup_epochs=1),
    # DLB: nesterov, wd 5e-4, lr 0.05, batch 64, x0.1 at epochs 150, 180, 210 of 240 (Meta-knowledge-Lab/DLB).
    "dlb": TrainSettings(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True, batch_size=64,
                         milestones=(0.625, 0.75, 0.875), gamma=0.1, warmup_epochs=0),
    # BYOT: wd 5e-4, x0.1 at E/3, 2E/3 and E - 10 (of 250: 0.96) (pytorch-self-distillation-final train.py).
    "byot": TrainSettings(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False, batch_size=128,
                          milestones=(1 / 3, 2 / 3, 0.96), gamma=0.1, warmup_epochs=0),
    # USKD on CIFAR-100 (cls_KD, mmcls's resnet18_8xb16_cifar100): wd 5e-4, x0.2 at 60, 120, 160 of 200.
    "uskd": TrainSettings(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False, batch_size=128,
                          milestones=(0.3, 0.6, 0.8), gamma=0.2, warmup_epochs=0),
    # The ImageNet-size sets' recipe: batch 256, 0.1 * 0.1^(epoch // 30) over 100 epochs.
    "imagenet": TrainSettings(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, batch_size=256,
                              milestones=(0.3, 0.6, 0.9), gamma=0.1, warmup_epochs=0),
}

# An optimiser's own defaults, taken when a sweep names that optimiser but not these values: the recipes above are
# SGD's (lr 0.1 would diverge under AdamW). torch.optim.AdamW's defaults.
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {"adamw": {"lr": 1e-3, "weight_decay": 0.01}}
