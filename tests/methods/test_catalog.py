"""The catalog of built-in methods (harness/config/catalog.json) is what their classes declare, and `tfbench methods`
prints what a trial will use."""
from __future__ import annotations

import re

from harness.cli import main
from harness.config import catalog
from harness.config.resolve import resolve_trial


def test_the_catalog_file_is_what_the_classes_declare():
    assert catalog.CATALOG.read_text() == catalog.dumped(catalog.generate()), \
        "harness/config/catalog.json is stale: regenerate with python -m harness.config.catalog --write"


def test_labels_colours_and_order_come_from_the_methods():
    from methods import METHODS

    for name in catalog.builtins():
        cls = METHODS.get(name)
        assert (catalog.label(name), catalog.color(name), catalog.order(name)[0]) == (cls.label, cls.color, cls.order)
    assert sorted(catalog.builtins(), key=catalog.order) == ["ce", "ls", "tfkd", "cskd", "pskd", "ols", "zipf",
                                                              "maxsup", "uskd", "dlb", "byot", "bake"]
    assert catalog.label("my_method") == "my_method" and catalog.order("my_method") > catalog.order("bake")


def rows_of(text: str, header: str) -> dict[str, str]:
    """The two-column table under `header` in `tfbench methods NAME --dataset D`'s output."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
    out = {}
    for line in lines[start:]:
        if not line.strip():
            break
        key, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        out[key] = value
    return out


def test_methods_for_a_dataset_prints_what_a_resolved_trial_uses(capsys):
    for method, dataset, model in (("zipf", "cifar100", None), ("zipf", "tinyimagenet", None),
                                   ("tfkd", "cifar100", "cifar_densenet121"), ("cskd", "inat21", None)):
        argv = ["methods", method, "--dataset", dataset] + (["--model", model] if model else [])
        assert main(argv) == 0
        out = capsys.readouterr().out
        spec = resolve_trial(method=method, dataset=dataset, model=model, seed=0)
        assert rows_of(out, "method parameter") == {k: repr(v) for k, v in spec.method_params.items()}
        train = rows_of(out, "training setting")
        assert train["epochs"] == repr(spec.train.epochs) and train["milestones"] == repr(spec.train.milestones)
        assert train["holdout"] == repr(spec.train.holdout) and train["recipe"] == repr(spec.train.recipe)
    # the values written out by hand: the seed's Table 2 for Zipf's LS on Tiny ImageNet, TF-KD's DenseNet row
    assert resolve_trial(method="zipf", dataset="tinyimagenet", seed=0).method_params["lam"] == 1.0
    assert resolve_trial(method="tfkd", dataset="cifar100", model="cifar_densenet121",
                         seed=0).method_params["temperature"] == 40.0


def test_the_listing_shows_the_presets_per_data_set(capsys):
    assert main(["methods", "zipf"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("parameter"))
    assert "cifar10, cifar100, digits" in header and "tinyimagenet" in header and "inat21" in header
    lam = next(line for line in out.splitlines() if line.strip().startswith("lam "))
    assert lam.split()[2:] == ["0.1", "0.1", "1.0", "1.0"]  # default, the low-resolution sets, inat21, tinyimagenet
    assert main(["methods", "zipff"]) == 2
    assert "did you mean 'zipf'" in capsys.readouterr().err
