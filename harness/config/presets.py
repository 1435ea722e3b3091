"""Training presets: the official recipes (values of the training settings) and each data set's defaults
(epochs, held-out split, recipe, model).

A method's own parameter presets per data set and model live on the method (`Method.preset`). Order of
precedence when a trial is resolved: explicit value (sweep file or --set) > dataset_defaults > the
method's preset > its Params defaults; for training settings: explicit > the recipe > the data set's default.
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
    # ImageNet / INAT21: batch 256, 0.1 * 0.1^(epoch // 30) over 100 epochs.
    "imagenet": TrainSettings(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, batch_size=256,
                              milestones=(0.3, 0.6, 0.9), gamma=0.1, warmup_epochs=0),
}

# Datasets whose official recipe is the ImageNet step schedule.
IMAGENET_RECIPE_DATASETS = {"imagenet", "inat21"}


def default_recipe(dataset: str) -> str:
    return "imagenet" if dataset in IMAGENET_RECIPE_DATASETS else "zipf"


# The clean protocol's held-out validation split: 5,000 images on CIFAR (the split of the papers that hold
# one out), 10% of each class elsewhere.
HOLDOUT_BY_DATASET: dict[str, float] = {"cifar10": 5000, "cifar100": 5000}


def default_holdout(dataset: str) -> float:
    return HOLDOUT_BY_DATASET.get(dataset, 0.1)


# Epochs when neither the sweep file nor --epochs says: the official recipes' lengths on the paper's sets (200 on
# CIFAR and Tiny ImageNet, 100 on ImageNet and iNat21); the small embedded sets converge in a few dozen.
EPOCHS_BY_DATASET: dict[str, int] = {"imagenet": 100, "inat21": 100, "digits": 30, "synthetic": 30,
                                     "fashion_mnist": 30}


def default_epochs(dataset: str) -> int:
    return EPOCHS_BY_DATASET.get(dataset, 200)


def default_model(dataset: str) -> str:
    return {"digits": "tiny_cnn", "synthetic": "tiny_cnn", "fashion_mnist": "tiny_cnn",
            "imagenet": "resnet50", "inat21": "resnet50"}.get(dataset, "cifar_preact_resnet18")
