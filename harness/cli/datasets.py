"""`tfbench datasets`: the registered datasets, their expected layouts, and where each looks for its data.

The lookup order is `harness.data.registry`'s; the text listing starts with the data home in use.
"""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="only these datasets (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON record per dataset instead of text")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="a Python file or module that registers data sets (DatasetDef): list and check only "
                        "those; repeatable")


def run(args: argparse.Namespace) -> int:
    from harness.data import DATASETS, data_home, describe_datasets
    from methods import load_user_module

    before = set(DATASETS.names())
    for ref in args.imports:
        load_user_module(ref)  # registering checks each hook's kind: a wrong one is one line
    added = [n for n in DATASETS.names() if n not in before]
    if args.imports and not added:
        from harness.errors import UserError

        raise UserError(f"--import {', '.join(args.imports)}: registers no data set; expected a class with "
                        f"@register_dataset(\"name\") (docs/datasets.md, \"Your own data set\")")
    args.names = args.names or added
    for name in args.names:
        if name not in DATASETS:
            DATASETS.get(name)  # raises the registry's one-line error with a did-you-mean
    rows = [r for r in describe_datasets() if not args.names or r["name"] in args.names]
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True))
        return 0
    home, source = data_home()
    print(f"data home: {home} (from {source}; TFBENCH_DATA sets it)")
    print(format_rows(rows))
    return 0


def format_rows(rows: list[dict]) -> str:
    """Human-readable listing: one block per dataset."""
    out = []
    for r in rows:
        flags = ["in-memory fast path" if r["in_memory"] else "DataLoader path"]
        if r["download"]:
            flags.append("download: true supported")
        out.append(f"{r['name']}  ({', '.join(flags)})")
        if r["env_var"]:
            out.append(f"  data:   {r['root']}  [{r['status']}]  (from {r['source']})")
            others = [f"{p} ({s})" for p, s in r["candidates"] if p != r["root"]]
            if others:
                out.append(f"  also:   {'; '.join(others)}")
            out.append(f"  env:    {r['env_var']} (or --set dataset.root=...; otherwise <data home>/{r['name']})")
        else:
            out.append("  data:   built in (no files needed)")
        out.append(f"  layout: {r['layout']}")
        out.append(f"  params: {', '.join(r['params']) or 'none'}")
        out.append("  defaults: " + ", ".join(f"{k} {v}" for k, v in r["defaults"].items()))
    return "\n".join(out)


__all__ = ["add_arguments", "format_rows", "run"]
