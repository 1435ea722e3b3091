"""Reading a YAML file safely, and the one formatter of configuration problems.

Every problem becomes one line `<file>:<line>: <path>: <what is wrong>; allowed: ...`; the line comes
from the YAML node the path points at (`yaml.compose` keeps marks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from methods.params import explain

MAX_BYTES = 1024 * 1024     # a sweep file is a few hundred lines; more is not a sweep file
MAX_DEPTH = 100            # nesting levels: a sweep file needs about six
MAX_NODES = 100_000         # YAML nodes after expanding aliases: an alias/merge bomb is refused, not expanded

Path_ = tuple[Any, ...]


class SweepError(UserError):
    """Every problem found in a sweep file, one per line (already formatted)."""

    def __init__(self, source: str, problems: list[str]):
        # one line per problem, whatever the text quoted (a user module's multi-line exception, YAML's excerpt)
        self.problems = [" ".join(str(p).split()) for p in problems]
        super().__init__("\n".join(p if p.startswith(source) else f"{source}: {p}" for p in self.problems))


@dataclass
class Problems:
    """Problems of one file, collected in one pass; each distinct line once, in the order found."""

    source: str
    lines: dict[Path_, int] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)

    def add(self, path: Path_, what: str) -> None:
        line = self.line_of(path) if path else None  # a file-wide problem (or a --set one) has no line
        where = f"{self.source}:{line}" if line else self.source
        text = f"{where}: {render(path)}: {what}" if path else f"{where}: {what}"
        text = " ".join(text.split())
        if text not in self.found:
            self.found.append(text)

    def add_pydantic(self, base: Path_, errors: list[dict[str, Any]], names: dict[Path_, list[str]]) -> None:
        """pydantic errors under `base`; `names` gives the allowed keys of each model (for did-you-mean)."""
        for err in errors:
            loc = tuple(err["loc"])
            parent = base + loc[:-1]
            self.add(base + loc, explain(err, names.get(_generic(parent), [])))

    def line_of(self, path: Path_) -> int | None:
        for n in range(len(path), 0, -1):
            line = self.lines.get(tuple(str(p) for p in path[:n]))
            if line:
                return line
        return None

    def raise_if_any(self) -> None:
        if self.found:
            raise SweepError(self.source, self.found)


def _generic(path: Path_) -> Path_:
    """('dataset_defaults', 'mydata', 'train') -> ('dataset_defaults', '*', 'train'), ('methods', 2) ->
    ('methods', '*'): where a model's list of allowed keys is found."""
    if len(path) >= 2 and path[0] == "dataset_defaults":
        path = ("dataset_defaults", "*", *path[2:])
    return tuple("*" if isinstance(p, int) else p for p in path)


def render(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def read_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """(plain data, {path: 1-based line}) of a YAML file, or SweepError in one line.

    Why compose first: the node graph shows aliases as shared nodes, so the expanded size is counted
    without expanding anything (a 9-level alias bomb is refused in milliseconds); only then is the
    data built with yaml.safe_load (plain data only: a !!python/... tag is an error, never code).
    """
    src = str(path)
    if not path.is_file():
        raise SweepError(src, ["no such file; give the path of a sweep .yaml file (see sweeps/)"])
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SweepError(src, [f"the file is {size:,} bytes; allowed: at most {MAX_BYTES:,} bytes for a sweep file"])
    try:
        data = path.read_bytes()
    except OSError as e:  # no permission, or a file that vanished
        raise SweepError(src, [f"cannot be read: {e.strerror or e}"]) from None
    try:
        text = data.decode("utf-8")
        if "\0" in text:
            raise ValueError
        if _flow_depth(text) > MAX_DEPTH:  # PyYAML takes seconds to fail on thousands of open brackets
            raise RecursionError
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        count = _expanded_size(root)
        if count > MAX_NODES:
            raise SweepError(src, [f"the YAML expands to more than {MAX_NODES:,} values (aliases repeated into "
                                   f"themselves?); allowed: at most {MAX_NODES:,}"])
        duplicated = _duplicate_keys(root)
        if duplicated:
            raise SweepError(src, duplicated)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SweepError(src, [f"{where}not valid YAML ({getattr(e, 'problem', None) or e})"]) from None
    except (UnicodeDecodeError, ValueError):  # ValueError: NUL bytes and the like
        raise SweepError(src, ["not a text file (a sweep file is UTF-8 YAML)"]) from None
    except RecursionError:  # deeply nested flow collections, or an alias inside itself
        raise SweepError(src, ["nested too deeply to be a sweep file"]) from None
    return data, _lines(root)


def _flow_depth(text: str) -> int:
    """The deepest bracket nesting, counted on the raw text (quotes ignored: an overestimate is harmless)."""
    depth = deepest = 0
    for c in text:
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
    return deepest


def _expanded_size(root: yaml.Node | None) -> int:
    """Node count with every alias expanded, computed on the shared graph (memoised by node identity)."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in memo:
            return memo[id(node)]
        if depth > MAX_DEPTH:
            raise RecursionError
        memo[id(node)] = MAX_NODES + 1  # a node reached again while being counted refers to itself
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(v, depth + 1) for v in node.value)
        else:
            n = 1
        memo[id(node)] = min(n, MAX_NODES + 1)
        return memo[id(node)]

    return 0 if root is None else size(root, 0)


def _duplicate_keys(root: yaml.Node | None) -> list[str]:
    """Keys given twice in one mapping: YAML keeps the last one silently, which would drop half an axis.
    Each node is visited once, however often aliases repeat it."""
    problems, seen_nodes, stack = [], set(), [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        problems.append(f"line {key.start_mark.line + 1}: key {key.value!r} appears twice in one "
                                        f"mapping (first on line {seen[key.value]}); give each key once")
                    seen.setdefault(key.value, key.start_mark.line + 1)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return problems


def _lines(root: yaml.Node | None) -> dict[Path_, int]:
    """{('methods', '1', 'params'): 4, ...}: where each value starts (keys as strings)."""
    out: dict[Path_, int] = {}
    stack: list[tuple[Path_, yaml.Node]] = [((), root)] if root is not None else []
    while stack and len(out) < MAX_NODES:
        path, node = stack.pop()
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    out.setdefault(path + (key.value,), key.start_mark.line + 1)
                    stack.append((path + (key.value,), value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((path + (str(i),), v) for i, v in enumerate(node.value))
    # a key's own line wins over its value's (a flow value may start on the same line anyway)
    return out
