"""Pieces the command modules share: the `--device` option and its resolution, repeatable list options.

Not a command (COMMANDS does not name it); importing it costs nothing (torch only when a device is resolved).
"""
from __future__ import annotations

import argparse

DEVICE_HELP = "auto (CUDA when visible, else CPU; default), cpu, cuda, cuda:N"


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def resolved_device(name: str, what: str = "--device") -> str:
    """auto -> cuda when visible, else cpu; anything else checked by the harness's one resolver."""
    from harness.train.device import resolve_device

    return str(resolve_device(name, what))


def split_list(values: list[str] | None) -> list[str] | None:
    """A repeatable option's values, each also accepting `a,b` (the older comma form); None when not given."""
    if not values:
        return None
    items = [t.strip() for v in values for t in str(v).split(",") if t.strip()]
    return items or None
