"""The figures of a results folder as summary.md lists them: each PNG in plots/ that tfbench wrote from this
folder, with its caption, the text `harness.results.plots.write_plots` keeps beside it as `<stem>.txt` (a
caption is never drawn in the image). Reads files only; no matplotlib."""
from __future__ import annotations

from pathlib import Path

from harness.folders import read_bounded
from harness.outputs import OutputFolder, source_of

# The kinds of figure, in the order a reader wants them: the answer first, the ranking across data sets last.
FIGURE_STEMS = ("differences", "learning", "ablation", "cost", "search", "reliability", "risk_coverage",
                "corruptions")
MAX_CAPTION_BYTES = 64 * 1024


def _order(stem: str) -> tuple[int, str]:
    kind = next((i for i, k in enumerate(FIGURE_STEMS) if stem.startswith(k + "_")), len(FIGURE_STEMS))
    return kind, stem


def figure_captions(results_dir: str | Path) -> list[tuple[str, str]]:
    """(the PNG's name in plots/, its caption) of every figure this folder's plots/ holds with a caption,
    both written from this folder (the ownership record, harness/outputs.py); another folder's figure or a
    user's file there is not listed."""
    plots = Path(results_dir) / "plots"
    source = source_of(results_dir)
    own = {name for name, src in OutputFolder(plots, source=source).recorded().items() if src == source}
    out = []
    for name in own:
        stem = name[:-len(".png")]
        if not name.endswith(".png") or f"{stem}.txt" not in own:
            continue
        data = read_bounded(plots / f"{stem}.txt", MAX_CAPTION_BYTES)
        if data is not None and (plots / name).is_file():
            out.append((stem, " ".join(data.decode("utf-8", "replace").split())))
    return [(f"{stem}.png", text) for stem, text in sorted(out, key=lambda sc: _order(sc[0]))]


def figures_markdown(results_dir: str | Path) -> str:
    """summary.md's list of figures, or '' when plots/ has none with a caption."""
    found = figure_captions(results_dir)
    if not found:
        return ""
    lines = ["## Figures\n", "In `plots/`, each as PNG (300 dpi) and PDF, its caption beside it as `<name>.txt` "
             "(the text below; the images carry none). `tfbench plot DIR --width page` redraws them two columns "
             "wide (docs/results.md, \"Figures\").\n"]
    lines += [f"- `plots/{name}`: {text.replace('|', '&#124;')}" for name, text in found]
    return "\n".join(lines) + "\n"
