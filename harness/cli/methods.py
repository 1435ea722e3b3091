"""`tfbench methods`: every registered method with its parameters, defaults and the values its presets give
each data set; `tfbench methods NAME --dataset D` prints what a trial of NAME on D uses.

The built-ins are listed from harness/config/catalog.json (generated from their classes: no torch import, so the
listing is instant); `--import` and `--dataset` import the methods and describe them live.
"""
from __future__ import annotations

import argparse
from typing import Any

from tabulate import tabulate

from harness.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="METHOD", help="only these methods (default: all)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="import a file or module that registers more methods (repeatable)")
    parser.add_argument("--dataset", default=None,
                        help="print the parameter values and training settings a trial on this data set uses")
    parser.add_argument("--model", default=None, help="with --dataset: the model (default: the data set's usual one)")


def _value(v: Any) -> str:
    return repr(v)


def format_record(r: dict[str, Any]) -> str:
    """One block: name, label, class, needs, recipe, summary, and the parameter table with a column per
    group of data sets whose presets give the same values (only the default column where none differs)."""
    head = f"{r['name']}  ({r['label']}; {r['module']})"
    if r["needs"]:
        head += f"  needs: {', '.join(r['needs'])}"
    head += f"  official recipe: {r['recipe']}"
    lines = [head] + ([f"  {r['summary']}"] if r["summary"] else [])
    if not r["params"]:
        return "\n".join([*lines, "  (no parameters)"])
    defaults = {p["name"]: p["default"] for p in r["params"]}
    groups = [g for g in r["presets"] if g["values"] != defaults]
    headers = ["parameter", "type", "default", *[", ".join(g["datasets"]) for g in groups]]
    rows = [[p["name"], p["type"], _value(p["default"]), *[_value(g["values"][p["name"]]) for g in groups]]
            for p in r["params"]]
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    lines.extend("  " + row for row in table.splitlines())
    if groups:
        lines.append("  (a data set column: the values a trial there uses, its preset applied; a data set not "
                     "listed gets the preset for its traits, e.g. its resolution class; a sweep file's or --set's "
                     "values win)")
    return "\n".join(lines)


def format_methods(names: list[str] | None = None, *, live: bool = False) -> str:
    from harness.config import catalog

    if live:
        from methods import METHODS

        records = {n: catalog.describe(n) for n in METHODS.names()}
    else:
        records = dict(catalog.builtins())
    for name in names or []:
        if name not in records:
            from methods.registry import did_you_mean

            raise UserError(f"unknown method {name!r}{did_you_mean(name, records)}; registered: "
                            f"{', '.join(sorted(records))} (a method of your own: --import FILE)")
    chosen = [records[n] for n in sorted(records, key=catalog.order) if not names or n in names]
    return "\n\n".join(format_record(r) for r in chosen)


def format_trial(method: str, dataset: str, model: str | None) -> str:
    """What a trial of `method` on `dataset` uses: resolved as `tfbench train` would (seed 0, no overrides)."""
    from harness.config.resolve import resolve_trial

    spec = resolve_trial(method=method, dataset=dataset, model=model, seed=0)
    t = spec.train
    params = [[k, _value(v)] for k, v in spec.method_params.items()]
    train = [[k, _value(getattr(t, k))] for k in ("epochs", "recipe", "batch_size", "lr", "momentum", "weight_decay",
                                                  "nesterov", "milestones", "gamma", "warmup_epochs", "protocol",
                                                  "holdout", "select")]
    out = [f"{method} on {dataset} with {spec.model}: what a trial uses (resolved as `tfbench train` resolves it; "
           f"a sweep file's or --set's values win)"]
    if params:
        out += ["", tabulate(params, headers=["method parameter", "value"], tablefmt="simple", disable_numparse=True)]
    out += ["", tabulate(train, headers=["training setting", "value"], tablefmt="simple", disable_numparse=True)]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    if args.imports or args.dataset:
        from methods import load_user_module

        for ref in args.imports:
            load_user_module(ref)
    if args.dataset:
        if len(args.names) != 1:
            raise UserError("--dataset needs exactly one method, e.g. `tfbench methods zipf --dataset cifar100`")
        print(format_trial(args.names[0], args.dataset, args.model))
        return 0
    if args.model:
        raise UserError("--model goes with --dataset, e.g. `tfbench methods tfkd --dataset cifar100 --model "
                        "cifar_densenet121`")
    print(format_methods(args.names or None, live=bool(args.imports)))
    return 0
