"""Report helpers for recipes: markdown tables, line and bar plots (PNG, Agg, no pyplot state), atomic JSON.

Recipes that summarise several runs (the curse-of-multilinguality experiment, the demo) use these so
that every report looks the same. Plots are drawn on a bare ``matplotlib.figure.Figure`` with the Agg
canvas: no global backend switch, no display needed, safe in threads and under nohup.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import atomic_write, atomic_write_text

MISSING = "–"  # an empty table cell (e.g. a language not in that run)


def format_value(value: Any, digits: int = 2) -> str:
    """A table cell: floats with `digits` decimals, large ints with thousands separators, None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2,
                   align: str | None = None) -> str:
    """A GitHub markdown table. align: one of l/r/c per column (default: first column left, the rest right)."""
    n = len(header)
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"row {i} has {len(row)} cells, the header has {n}: {list(row)!r}")
    align = align or "l" + "r" * (n - 1)
    if len(align) != n or set(align) - set("lrc"):
        raise ValueError(f"align={align!r}: expected one of l/r/c for each of the {n} columns")
    cells = [[format_value(h) for h in header]] + [[format_value(v, digits) for v in row] for row in rows]
    widths = [max(3, *(len(r[j]) for r in cells)) for j in range(n)]
    rule = {"l": lambda w: ":" + "-" * (w - 1), "r": lambda w: "-" * (w - 1) + ":",
            "c": lambda w: ":" + "-" * (w - 2) + ":"}

    def line(row: Sequence[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)]
        return "| " + " | ".join(padded) + " |"

    out = [line(cells[0]), "| " + " | ".join(rule[a](w) for a, w in zip(align, widths)) + " |"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty JSON, written atomically (readers see the old file or the new one, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def publish(out: str | os.PathLike, results: Any, text: str, plot: Any = None) -> None:
    """An experiment's end: results.json and report.md in ``out`` (atomically), its plots (``plot(results, out)``),
    and the report on stdout."""
    out = Path(out)
    write_json(out / "results.json", results)
    write_text(out / "report.md", text)
    if plot is not None:
        plot(results, out)
    print(text, flush=True)


def line_plot(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, Sequence[float | None]], *,
              title: str = "", xlabel: str = "", ylabel: str = "", log2_x: bool = False,
              styles: Mapping[str, Mapping[str, Any]] | None = None, legend_columns: int = 1,
              log_y: bool = False) -> Path:
    """One PNG with a line per series (label -> y values aligned with x; None leaves a gap).

    log2_x: a base-2 x axis with a tick at every x (numbers of languages 2, 4, 8, 16).
    log_y: a logarithmic y axis (e.g. perplexity from an untrained model's to a trained one's).
    styles: label -> extra keyword arguments for ``Axes.plot`` (color, linestyle, marker ...).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for label, ys in series.items():
        if len(ys) != len(x):
            raise ValueError(f"series {label!r} has {len(ys)} values for {len(x)} x values")
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, ys in series.items():
        style = {"marker": "o", **((styles or {}).get(label, {}))}
        ax.plot(list(x), [math.nan if y is None else y for y in ys], label=label, **style)
    if log2_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{v:g}" for v in x])
        ax.minorticks_off()
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize="small", ncols=legend_columns)
    fig.tight_layout()
    return _save_png(fig, path)


def bar_plot(path: str | os.PathLike, categories: Sequence[str], series: Mapping[str, Sequence[float | None]], *,
             title: str = "", ylabel: str = "", log_y: bool = False, reference: float | None = None,
             reference_label: str = "", value_format: str = "{:.1f}") -> Path:
    """One PNG of grouped bars: a group per category (e.g. language), a bar per series (e.g. model).

    None leaves a gap. Each bar is labelled with its value (``value_format``). reference: a dashed horizontal
    line (e.g. chance accuracy) labelled ``reference_label`` in the legend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for label, ys in series.items():
        if len(ys) != len(categories):
            raise ValueError(f"series {label!r} has {len(ys)} values for {len(categories)} categories")
    fig = Figure(figsize=(max(6.4, 0.9 * len(categories) * max(1, len(series)) / 2 + 2), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for i, (label, ys) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
        heights = [math.nan if y is None else y for y in ys]
        bars = ax.bar(xs, heights, width, label=label)
        ax.bar_label(bars, labels=["" if y is None else value_format.format(y) for y in ys], fontsize="x-small",
                     padding=1)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", linewidth=1, label=reference_label or None)
    if log_y:
        ax.set_yscale("log")
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(list(categories))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if series:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save_png(fig, path)


def _save_png(fig, path: str | os.PathLike) -> Path:
    """Write the figure atomically: a reader never sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "sd", "values"}: sd is the sample standard deviation (n - 1), 0 for a single value."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "sd": sd, "values": values}


def over_seeds(items: Sequence[Any]) -> Any:
    """Results of one shape, one per seed -> that shape with every number replaced by ``mean_sd`` of its values.

    Dicts are merged key by key (a key missing from some seeds is summarised over the seeds that have it); other
    leaves (text, lists) are taken from the first seed."""
    present = [item for item in items if item is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, Mapping):
        keys = list(dict.fromkeys(k for item in present for k in item))
        return {k: over_seeds([item[k] for item in present if k in item]) for k in keys}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return mean_sd(present)
    return first


def format_mean_sd(stat: Mapping[str, Any] | None, digits: int = 2, percent: bool = False) -> str:
    """A ``mean_sd`` as "mean ± sd" (a dash for None); percent: as signed percentages of the values."""
    if stat is None:
        return MISSING
    if percent:
        return f"{stat['mean']:+.{digits}%} ± {stat['sd']:.{digits}%}"
    return f"{stat['mean']:,.{digits}f} ± {stat['sd']:,.{digits}f}"
