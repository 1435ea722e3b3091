"""`tfbench bench methods` and `tfbench methods` keep working (smoke sizes; not a measurement)."""
import pytest

from harness.bench.methods import VOTES_ROW, bench_methods, format_bench_methods
from harness.cli import main

BUILTINS = ["ce", "cskd", "ls", "ols", "pskd", "tfkd", "zipf"]  # other tests may register more


def test_smoke_rows_cover_every_method_and_size():
    rows = bench_methods(smoke=True, methods=BUILTINS + [VOTES_ROW])
    names = BUILTINS + [VOTES_ROW]
    sizes = sorted({(r["B"], r["C"], r["V"]) for r in rows})
    assert len(sizes) == 2 and len(rows) == len(names) * 2
    for size in sizes:
        at = [r for r in rows if (r["B"], r["C"], r["V"]) == size]
        assert [r["method"] for r in at] == names
        assert all(r["ms"] > 0 for r in at)
        assert next(r for r in at if r["method"] == "ce")["x_ce"] == 1.0
    table = format_bench_methods(rows)
    assert all(n in table for n in names) and "x CE" in table


def test_bench_subset_and_bad_size():
    rows = bench_methods(sizes=[(4, 6, 4)], repeats=1, warmup=0, methods=["zipf"])
    assert [r["method"] for r in rows] == ["ce", "zipf"]
    with pytest.raises(ValueError, match="square"):
        bench_methods(sizes=[(4, 6, 5)], repeats=1, warmup=0, methods=["zipf"])


def test_cli_bench_methods_smoke(capsys):
    assert main(["bench", "methods", "--smoke", "--method", "ls"]) == 0
    out = capsys.readouterr().out
    assert "| ls " in out and "| ce " in out
    assert main(["bench", "methods", "--size", "4x6x5", "--method", "zipf", "--repeats", "1"]) == 2
    assert "square" in capsys.readouterr().err


def test_cli_methods_lists_every_method_with_its_parameters(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in BUILTINS:
        assert f"\n{name}  (" in "\n" + out
    for param in ("epsilon", "alpha_T", "table_dtype", "correct_prob", "smallest_prob", "exp_lambda", "init"):
        assert param in out
    assert main(["methods", "nosuch"]) == 2
    assert "unknown method 'nosuch'" in capsys.readouterr().err
