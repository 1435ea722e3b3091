"""What a method's presets may know of a data set: its name and its traits (each data set declares them on
its class in harness/data; the harness hands them to `Method.preset`). Imports nothing: torch-free."""
from __future__ import annotations

LOW, HIGH = "low", "high"  # resolution classes


class DataSet(str):
    """A data set's name that carries its traits. It compares and hashes as the name, so a preset keyed on
    the paper's data sets (`dataset == "inat21"`, `BY_DATASET.get(dataset)`) reads as before, and one keyed
    on a trait (`dataset.resolution`) also covers a data set its authors never named.

    `resolution`: LOW (inputs of at most 64 px on CIFAR-size networks, whose final maps are a few pixels
    across) or HIGH (ImageNet-size inputs and networks)."""

    resolution: str

    def __new__(cls, name: str, *, resolution: str = LOW) -> DataSet:
        if resolution not in (LOW, HIGH):
            raise ValueError(f"resolution {resolution!r}; allowed: {LOW}, {HIGH}")
        self = super().__new__(cls, name)
        self.resolution = resolution
        return self
