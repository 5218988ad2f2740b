"""Render a study's *summary* (the JSON-able dict of `analysis.findings`) as an offline report.

`render(summary, out)` writes into `out/`:

- `index.html`: one self-contained page (inline CSS, no JS, no CDN) with the study header,
  headline sentences computed from the numbers, one section per finding (figure + caption +
  compact table), and a note for every section the summary leaves empty;
- `summary.json`: the summary itself, NaN/inf written as null, so the page's numbers can be
  checked or re-plotted without this tool;
- one PNG per non-empty figure (`FIGURES`), drawn with matplotlib's Agg canvas.

The renderer reads only the keys of the summary contract (docs/report.md), tolerates extra
keys, and treats a missing section as an empty list. Every file is written atomically
(temp + rename), so a crash leaves the previous report or the new file, never half of one; a
figure skipped this time has its PNG of an earlier render removed, so the folder never shows a
stale figure next to a page that says the section is empty.
"""

from __future__ import annotations

import html
import io
import json
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warehouse.errors import FormatError, WarehouseError
from warehouse.store.files import atomic_write_bytes

# ~110 dpi: sharp on screen, small on disk. Figures are at most MAX_WIDTH inches wide, so
# at 110 dpi they fit the page's 1,180 px column without the browser shrinking their labels.
DPI = 110
MAX_WIDTH = 10.5
FIGURES = (
    "intra.png",
    "sweep.png",
    "cumulativity.png",
    "overlap.png",
    "cross_relation.png",
    "cross_lingual.png",
    "layers.png",
    "specificity.png",
)
# Cell annotations stay legible up to this many rows/columns; beyond, colour alone.
ANNOTATE_MAX = 16
SPLIT_ORDER = ("identify", "test")

# Fields a record of each section must carry (the contract with analysis.findings).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "baseline": ("relation", "language", "split", "n", "accuracy"),
    "intra": (
        "relation",
        "split",
        "n",
        "baseline",
        "target",
        "control_mean",
    ),
    "sweep": ("relation", "count", "own", "others"),
    "cumulativity": ("relation", "a", "b", "total", "affected", "score"),
    "overlap": ("a", "b", "shared", "jaccard"),
    "cross_relation": ("target", "ablated", "baseline", "accuracy", "relative_drop"),
    "cross_lingual": ("relation", "language", "baseline", "accuracy", "relative_drop"),
    "interference": ("target", "ablated", "baseline", "accuracy", "gain"),
    "specificity": ("relation", "ppl_baseline", "ppl_ablated", "ratio"),
    "layers": ("relation", "layer", "count"),
}


# ---------------------------------------------------------------------------------------------
# Input: clean and validate the summary.


def clean_summary(obj: Any, where: str = "summary") -> Any:
    """A JSON-safe copy: NaN/inf -> None, tuples -> lists, numpy scalars -> Python numbers.

    Anything JSON cannot hold (sets, objects, non-string keys) is refused with its location,
    rather than being stringified into a report that no longer says what was computed.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise FormatError(f"{where} has the non-string key {k!r}; JSON keys are strings")
            out[k] = clean_summary(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, list | tuple):
        return [clean_summary(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise FormatError(
        f"{where} is a {type(obj).__name__}, which a summary cannot hold "
        "(use numbers, strings, lists, dicts or null)"
    )


def _rows(summary: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Section `name` as a list of records, checked for the contract's fields."""
    rows = summary.get(name)
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise FormatError(
            f"summary[{name!r}] must be a list of records, not a {type(rows).__name__}"
        )
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise FormatError(
                f"summary[{name!r}][{i}] must be a record (dict), not a {type(r).__name__}"
            )
        missing = [k for k in SECTION_KEYS[name] if k not in r]
        if missing:
            raise FormatError(
                f"summary[{name!r}][{i}] lacks {', '.join(missing)}; regenerate "
                "the summary with the findings module of this version"
            )
    return rows


def _num(x: Any) -> float:
    """A plottable float: None (or anything non-numeric) becomes NaN."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return math.nan
    return float(x)


def _ordered(preferred: Iterable[Any], seen: Iterable[Any]) -> list[Any]:
    """`preferred` order first (the study's), then anything else the data holds, sorted."""
    pref = list(dict.fromkeys(preferred))
    present = set(seen)
    extra = sorted(present - set(pref), key=lambda s: (str(type(s)), s))
    return [p for p in pref if p in present] + extra


# ---------------------------------------------------------------------------------------------
# Text formatting.


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage ("62.5 %"); None/NaN as an em dash."""
    v = _num(x)
    return "—" if math.isnan(v) else f"{100 * v:.{digits}f} %"


def fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    v = _num(x)
    return "—" if math.isnan(v) else f"{v:.{digits}f}"


def _mean(values: Iterable[Any]) -> float:
    vals = [v for v in (_num(x) for x in values) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


# ---------------------------------------------------------------------------------------------
# Headline.


@dataclass
class Headline:
    own_baseline: float = math.nan
    own_ablated: float = math.nan
    own_controls: float = math.nan
    others_ablated_drop: float = math.nan
    interference_cells: int | None = None
    split: str | None = None  # the intra split the own-relation means come from
    relations: int | None = None  # how many relations they average over


def compute_headline(summary: dict[str, Any]) -> Headline:
    """The summary's own headline if it has one, else means over `intra` (test split when
    present: held-out facts), `cross_relation` off-diagonal cells and `interference` rows."""
    given = summary.get("headline")
    intra = _rows(summary, "intra")
    splits = _ordered(SPLIT_ORDER, [r["split"] for r in intra])
    split = "test" if "test" in splits else (splits[0] if splits else None)
    rows = [r for r in intra if r["split"] == split]
    if isinstance(given, dict) and given:
        ic = given.get("interference_cells")
        return Headline(
            own_baseline=_num(given.get("own_baseline")),
            own_ablated=_num(given.get("own_ablated")),
            own_controls=_num(given.get("own_controls")),
            others_ablated_drop=_num(given.get("others_ablated_drop")),
            interference_cells=ic if isinstance(ic, int) and not isinstance(ic, bool) else None,
        )
    cross = [r for r in _rows(summary, "cross_relation") if r["target"] != r["ablated"]]
    return Headline(
        own_baseline=_mean(r["baseline"] for r in rows),
        own_ablated=_mean(r["target"] for r in rows),
        own_controls=_mean(r["control_mean"] for r in rows),
        others_ablated_drop=_mean(r["relative_drop"] for r in cross),
        # Zero interference cells is a finding only where cross-relation cells were evaluated.
        interference_cells=len(_rows(summary, "interference"))
        if _rows(summary, "interference") or cross
        else None,
        split=split,
        relations=len({r["relation"] for r in rows}) or None,
    )


def headline_sentences(h: Headline, top_k: Any) -> list[str]:
    """Plain-text sentences (escaped by the caller); a clause whose number is missing is left
    out rather than printed as a dash inside prose."""
    out: list[str] = []
    k = f"top-{top_k:,}" if isinstance(top_k, int) else "top-k"
    if not (math.isnan(h.own_baseline) or math.isnan(h.own_ablated)):
        verb = "fell" if h.own_ablated <= h.own_baseline else "rose"
        scope = ""
        if h.relations:
            scope = f" over {h.relations} relation{'s' if h.relations != 1 else ''}"
        if h.split:
            scope += f" ({h.split} split)"
        s = (
            f"With each relation's {k} neurons deactivated, own-relation accuracy {verb} from "
            f"{pct(h.own_baseline)} to {pct(h.own_ablated)} on average{scope}"
        )
        if not math.isnan(h.own_controls):
            s += f"; with as many random neurons instead: {pct(h.own_controls)}"
        out.append(s + ".")
    if not math.isnan(h.others_ablated_drop):
        d = h.others_ablated_drop
        verb = "fell" if d >= 0 else "rose"
        out.append(
            f"Under another relation's {k} neurons, a relation's accuracy {verb} by "
            f"{pct(abs(d))} of its baseline on average (relative drop)."
        )
    if h.interference_cells == 0:
        out.append(
            "No relation pair showed interference (accuracy rising when another "
            "relation's neurons were deactivated)."
        )
    elif h.interference_cells is not None:
        n = h.interference_cells
        out.append(
            f"{n} relation pair{'s' if n != 1 else ''} showed interference: accuracy "
            "rose when another relation's neurons were deactivated."
        )
    return out


# ---------------------------------------------------------------------------------------------
# Figures. Each builder returns a matplotlib Figure, or None when its section is empty.


def _new_figure(width: float, height: float):
    # Figure + Agg canvas directly, not pyplot: no global state, no GUI backend, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(width, MAX_WIDTH), min(height, 24.0)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _label_axes(ax, rows: Sequence[Any], cols: Sequence[Any], xlabel: str, ylabel: str) -> None:
    ax.set_xticks(range(len(cols)))
    ax.set_yticks(range(len(rows)))
    long_cols = any(len(str(c)) > 3 for c in cols)
    ax.set_xticklabels(
        [str(c) for c in cols],
        rotation=40 if long_cols else 0,
        ha="right" if long_cols else "center",
        rotation_mode="anchor",
        fontsize=8 if len(cols) > 20 else 9,
    )
    ax.set_yticklabels([str(r) for r in rows], fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _heatmap(
    matrix: np.ndarray,
    rows: Sequence[Any],
    cols: Sequence[Any],
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    xlabel: str,
    ylabel: str,
    cbar_label: str,
    title: str,
    labels: np.ndarray | None = None,
    center: bool = False,
):
    """One heatmap with NaN cells greyed (missing, never drawn as a value) and optional
    per-cell text; `center` keeps a diverging colormap's midpoint at 0."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    nr, nc = matrix.shape
    width = min(MAX_WIDTH, max(5.0, 2.6 + 0.55 * nc + 0.06 * max(len(str(r)) for r in rows)))
    fig = _new_figure(width, max(3.2, 1.6 + 0.42 * nr + 0.05 * max(len(str(c)) for c in cols)))
    ax = fig.add_subplot()
    cm = colormaps[cmap].with_extremes(bad="#d9d9d9")  # NaN cells: missing, grey
    if center:
        lim = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
        lim = lim if lim > 0 else 1.0
        vmin, vmax = -lim, lim
    norm = Normalize(vmin=vmin, vmax=vmax)
    im = ax.imshow(
        np.ma.masked_invalid(matrix), cmap=cm, norm=norm, aspect="auto", interpolation="nearest"
    )
    _label_axes(ax, rows, cols, xlabel, ylabel)
    # ~7 characters per inch of figure at 11 pt: wrap rather than clip a long title.
    ax.set_title(textwrap.fill(title, max(20, int(width * 7))), fontsize=11)
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label(cbar_label)
    if labels is not None:
        for i in range(nr):
            for j in range(nc):
                if not labels[i, j]:
                    continue
                v = matrix[i, j]
                # White text on the dark ends of the colormap, black elsewhere.
                dark = np.isfinite(v) and (
                    abs(v) > 0.6 * max(abs(vmin), abs(vmax)) if center else norm(v) > 0.6
                )
                ax.text(
                    j,
                    i,
                    labels[i, j],
                    ha="center",
                    va="center",
                    fontsize=6 if nc > 24 else 7 if nc > 10 else 8,
                    color="white" if dark else "black",
                )
    return fig


def _matrix(
    rows: Sequence[Any], cols: Sequence[Any], cells: dict[tuple[Any, Any], float]
) -> np.ndarray:
    m = np.full((len(rows), len(cols)), np.nan)
    ri = {r: i for i, r in enumerate(rows)}
    ci = {c: j for j, c in enumerate(cols)}
    for (r, c), v in cells.items():
        if r in ri and c in ci:
            m[ri[r], ci[c]] = v
    return m


def fig_intra(ctx: _Context):
    rows = ctx.rows["intra"]
    if not rows:
        return None
    splits = _ordered(SPLIT_ORDER, [r["split"] for r in rows])
    n_rel = max(len({r["relation"] for r in rows if r["split"] == s}) for s in splits)
    fig = _new_figure(max(6.5, 2.0 + 0.75 * n_rel), 3.4 * len(splits) + 0.4)
    axes = fig.subplots(len(splits), 1, squeeze=False)[:, 0]
    series = (
        ("baseline", "baseline", "#9e9e9e"),
        ("target", "own top-k off", "#d62728"),
        ("control_mean", "random controls (mean, 95 % CI)", "#1f77b4"),
    )
    for ax, split in zip(axes, splits, strict=True):
        sub = {r["relation"]: r for r in rows if r["split"] == split}
        rels = ctx.relations_of(sub)
        x = np.arange(len(rels))
        w = 0.27
        for i, (key, label, color) in enumerate(series):
            y = np.array([100 * _num(sub[r][key]) for r in rels])
            ax.bar(x + (i - 1) * w, np.nan_to_num(y), w, color=color, label=label)
            if key == "control_mean":
                lo = np.array([100 * _num(sub[r].get("control_lo")) for r in rels])
                hi = np.array([100 * _num(sub[r].get("control_hi")) for r in rels])
                ok = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
                    ax.errorbar(
                        x[ok] + w,
                        y[ok],
                        yerr=err[:, ok],
                        fmt="none",
                        ecolor="black",
                        capsize=3,
                        lw=1,
                    )
            # A missing value is said so, not drawn as a zero-height bar that reads as 0 %.
            for xi in x[~np.isfinite(y)]:
                ax.text(
                    xi + (i - 1) * w,
                    1.5,
                    "n/a",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    color=color,
                )
        ax.set_xticks(x)
        ax.set_xticklabels(rels, rotation=30, ha="right", rotation_mode="anchor", fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{split} split", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.28), ncol=3, frameon=False
    )
    return fig


def fig_sweep(ctx: _Context):
    rows = ctx.rows["sweep"]
    if not any(_num(r["count"]) > 0 for r in rows):
        return None
    by_rel: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_rel.setdefault(r["relation"], []).append(r)
    rels = ctx.relations_of(by_rel)

    def curve(rel: str, key: str) -> tuple[np.ndarray, np.ndarray, float]:
        pts = sorted(by_rel[rel], key=lambda r: _num(r["count"]))
        xs = np.array([_num(r["count"]) for r in pts])
        ys = np.array([100 * _num(r[key]) for r in pts])
        base = ys[xs == 0]
        pos = xs > 0
        return xs[pos], ys[pos], float(base[0]) if base.size else math.nan

    own_c, oth_c = "#d62728", "#1f77b4"
    if len(rels) <= ANNOTATE_MAX:
        ncols = min(4, len(rels))
        nrows = math.ceil(len(rels) / ncols)
        fig = _new_figure(3.3 * ncols + 0.4, 2.6 * nrows + 0.6)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax in axes.flat[len(rels) :]:
            ax.set_visible(False)
        for ax, rel in zip(axes.flat, rels, strict=False):
            for key, color, label in (
                ("own", own_c, "own relation"),
                ("others", oth_c, "other relations"),
            ):
                xs, ys, base = curve(rel, key)
                ax.plot(xs, ys, "o-", color=color, ms=3, lw=1.5, label=label)
                if not math.isnan(base):
                    ax.axhline(base, color=color, ls="--", lw=1, alpha=0.7)
            ax.set_xscale("log")
            ax.set_ylim(0, 105)
            ax.set_title(rel, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes[-1, :]:
            ax.set_xlabel("neurons deactivated")
        for ax in axes[:, 0]:
            ax.set_ylabel("accuracy (%)")
        axes.flat[0].legend(fontsize=7, loc="lower left")
        return fig
    # Many relations: one panel, a thin line per relation and the mean over relations thick.
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    for key, color, label in (("own", own_c, "own relation"), ("others", oth_c, "others")):
        curves = [curve(rel, key) for rel in rels]
        for xs, ys, _ in curves:
            ax.plot(xs, ys, "-", color=color, lw=0.6, alpha=0.3)
        counts = sorted({float(x) for xs, _, _ in curves for x in xs})
        means = [
            _mean(ys[xs == c][0] / 100 for xs, ys, _ in curves if (xs == c).any()) * 100
            for c in counts
        ]
        ax.plot(counts, means, "o-", color=color, lw=2.2, label=f"{label} (mean)")
        base = _mean(b / 100 for _, _, b in curves) * 100
        if not math.isnan(base):
            ax.axhline(base, color=color, ls="--", lw=1, label=f"{label} baseline (mean)")
    ax.set_xscale("log")
    ax.set_ylim(0, 105)
    ax.set_xlabel("neurons deactivated")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _ranges(ctx: _Context, rows: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    study_ranges = [
        tuple(r)
        for r in ctx.study.get("ranges") or []
        if isinstance(r, list | tuple) and len(r) == 2
    ]
    return _ordered(study_ranges, [(r["a"], r["b"]) for r in rows])


def _range_label(ab: tuple[Any, Any]) -> str:
    a, b = ab
    return f"{fmt(a)}–{fmt(b)}"


def fig_cumulativity(ctx: _Context):
    rows = ctx.rows["cumulativity"]
    if not rows:
        return None
    ranges = _ranges(ctx, rows)
    rels = ctx.relations_of(r["relation"] for r in rows)
    # total == 0 means no prompt to be affected: the score is undefined, shown grey, never 0.
    cells = {
        (r["relation"], (r["a"], r["b"])): (_num(r["score"]) if _num(r["total"]) > 0 else math.nan)
        for r in rows
    }
    m = _matrix(rels, ranges, cells)
    labels = None
    if len(rels) <= ANNOTATE_MAX and len(ranges) <= ANNOTATE_MAX:
        labels = np.where(np.isfinite(m), np.vectorize(lambda v: f"{v:.2f}")(m), "")
    return _heatmap(
        m,
        rels,
        [_range_label(r) for r in ranges],
        cmap="viridis",
        vmin=0,
        vmax=1,
        xlabel="range a–b of neurons deactivated",
        ylabel="relation",
        cbar_label="score = 1 − affected / total",
        title="Cumulativity",
        labels=labels,
    )


def fig_overlap(ctx: _Context):
    rows = ctx.rows["overlap"]
    if not rows:
        return None
    rels = ctx.relations_of([r["a"] for r in rows] + [r["b"] for r in rows])
    m = _matrix(rels, rels, {(r["a"], r["b"]): _num(r["jaccard"]) for r in rows})
    labels = None
    if len(rels) <= ANNOTATE_MAX:
        shared = {(r["a"], r["b"]): r["shared"] for r in rows}
        labels = np.array(
            [[fmt(shared[(a, b)]) if (a, b) in shared else "" for b in rels] for a in rels],
            dtype=object,
        )
    return _heatmap(
        m,
        rels,
        rels,
        cmap="Blues",
        vmin=0,
        vmax=1,
        xlabel="relation",
        ylabel="relation",
        cbar_label="Jaccard index of neuron sets",
        title="Neuron overlap" + (" (cells: shared neurons)" if labels is not None else ""),
        labels=labels,
    )


def _drop_labels(m: np.ndarray) -> np.ndarray | None:
    if max(m.shape) > ANNOTATE_MAX:
        return None
    return np.where(np.isfinite(m), np.vectorize(lambda v: f"{100 * v:+.0f}")(m), "")


def fig_cross_relation(ctx: _Context):
    rows = ctx.rows["cross_relation"]
    if not rows:
        return None
    targets = ctx.relations_of(r["target"] for r in rows)
    ablated = ctx.relations_of(r["ablated"] for r in rows)
    m = _matrix(
        targets, ablated, {(r["target"], r["ablated"]): _num(r["relative_drop"]) for r in rows}
    )
    return _heatmap(
        m,
        targets,
        ablated,
        cmap="RdBu_r",
        vmin=-1,
        vmax=1,
        center=True,
        xlabel="neurons deactivated: top-k of relation",
        ylabel="evaluated relation",
        cbar_label="relative drop (red: fell, blue: rose)",
        title="Cross-relation effect (cells: relative drop, %)",
        labels=_drop_labels(m),
    )


def fig_cross_lingual(ctx: _Context):
    rows = ctx.rows["cross_lingual"]
    if not rows:
        return None
    rels = ctx.relations_of(r["relation"] for r in rows)
    langs = _ordered(ctx.study.get("languages") or [], [r["language"] for r in rows])
    m = _matrix(
        rels, langs, {(r["relation"], r["language"]): _num(r["relative_drop"]) for r in rows}
    )
    found = ctx.study.get("identify_language") or "en"
    return _heatmap(
        m,
        rels,
        langs,
        cmap="RdBu_r",
        vmin=-1,
        vmax=1,
        center=True,
        xlabel="language of the prompts",
        ylabel="relation",
        cbar_label="relative drop (red: fell, blue: rose)",
        title=f"Neurons found in {found}, evaluated per language (cells: relative drop, %)",
        labels=_drop_labels(m),
    )


def fig_layers(ctx: _Context):
    rows = ctx.rows["layers"]
    if not rows:
        return None
    rels = ctx.relations_of(r["relation"] for r in rows)
    layer_vals = [int(_num(r["layer"])) for r in rows if not math.isnan(_num(r["layer"]))]
    if not layer_vals:
        return None
    layers = list(range(min(0, min(layer_vals)), max(layer_vals) + 1))
    # A layer with no selected neuron is a true 0 here (every layer was searched).
    m = _matrix(
        rels,
        layers,
        {
            (r["relation"], int(_num(r["layer"]))): _num(r["count"])
            for r in rows
            if not math.isnan(_num(r["layer"]))
        },
    )
    m = np.where(np.isnan(m), 0.0, m)
    labels = None
    if len(rels) <= ANNOTATE_MAX and len(layers) <= 40:
        labels = np.vectorize(lambda v: f"{v:.0f}" if v else "")(m)
    return _heatmap(
        m,
        rels,
        layers,
        cmap="YlOrRd",
        vmin=0,
        vmax=max(1.0, float(m.max())),
        xlabel="layer",
        ylabel="relation",
        cbar_label="neurons in the selection",
        title="Where each relation's neurons sit",
        labels=labels,
    )


def fig_specificity(ctx: _Context):
    rows = [
        r
        for r in ctx.rows["specificity"]
        if not (math.isnan(_num(r["ppl_baseline"])) and math.isnan(_num(r["ppl_ablated"])))
    ]
    if not rows:
        return None
    sub = {r["relation"]: r for r in rows}
    rels = ctx.relations_of(sub)
    x = np.arange(len(rels))
    fig = _new_figure(max(6.0, 2.0 + 0.65 * len(rels)), 3.8)
    ax = fig.add_subplot()
    base = np.array([_num(sub[r]["ppl_baseline"]) for r in rels])
    abl = np.array([_num(sub[r]["ppl_ablated"]) for r in rels])
    ax.bar(x - 0.2, np.nan_to_num(base), 0.4, color="#9e9e9e", label="baseline")
    ax.bar(x + 0.2, np.nan_to_num(abl), 0.4, color="#d62728", label="own top-k off")
    for i, r in enumerate(rels):
        ratio = _num(sub[r]["ratio"])
        top = np.nanmax([base[i], abl[i]])
        if not math.isnan(ratio) and np.isfinite(top):
            ax.text(i, top * 1.02, f"×{ratio:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(rels, rotation=30, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_ylabel("perplexity")
    both = np.concatenate([base, abl])
    ax.set_ylim(0, float(np.nanmax(both)) * 1.12 if np.isfinite(both).any() else 1.0)
    # Legend above the axes: inside, it would cover the ratio labels of the first bars.
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------
# Tables (HTML).


def _table(
    header: Sequence[str],
    body: Iterable[Sequence[str]],
    *,
    numeric_from: int = 1,
    caption: str | None = None,
) -> str:
    """Cells are escaped here; columns from `numeric_from` on are right-aligned."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append(
        "<thead><tr>"
        + "".join(
            f"<th{' class=num' if i >= numeric_from else ''}>{esc(h)}</th>"
            for i, h in enumerate(header)
        )
        + "</tr></thead><tbody>"
    )
    for row in body:
        out.append(
            "<tr>"
            + "".join(
                f"<td{' class=num' if i >= numeric_from else ''}>{esc(c)}</td>"
                for i, c in enumerate(row)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _ci(r: dict[str, Any]) -> str:
    if _num(r.get("control_mean")) != _num(r.get("control_mean")):  # NaN: no controls
        return "—"
    return f"{pct(r.get('control_mean'))} [{pct(r.get('control_lo'))}, {pct(r.get('control_hi'))}]"


def table_baseline(ctx: _Context) -> str:
    rows = ctx.rows["baseline"]
    if not rows:
        return ""
    cols = _ordered(
        [(lang, s) for lang in ctx.study.get("languages") or [] for s in SPLIT_ORDER],
        [(r["language"], r["split"]) for r in rows],
    )
    cell = {(r["relation"], r["language"], r["split"]): r for r in rows}
    rels = ctx.relations_of(r["relation"] for r in rows)
    body = []
    for rel in rels:
        line = [rel]
        for lang, s in cols:
            r = cell.get((rel, lang, s))
            line.append("" if r is None else f"{pct(r['accuracy'])} (n={fmt(r['n'])})")
        body.append(line)
    return _table(["relation"] + [f"{lang} · {s}" for lang, s in cols], body)


def table_intra(ctx: _Context) -> str:
    rows = ctx.rows["intra"]
    splits = _ordered(SPLIT_ORDER, [r["split"] for r in rows])
    body = []
    for s in splits:
        sub = {r["relation"]: r for r in rows if r["split"] == s}
        for rel in ctx.relations_of(sub):
            r = sub[rel]
            d = _num(r["target"]) - _num(r["baseline"])
            body.append(
                [
                    rel,
                    s,
                    fmt(r["n"]),
                    pct(r["baseline"]),
                    pct(r["target"]),
                    "—" if math.isnan(d) else f"{100 * d:+.1f} pt",
                    _ci(r),
                    fmt(r.get("control_n")),
                ]
            )
    return _table(
        [
            "relation",
            "split",
            "n",
            "baseline",
            "own top-k off",
            "change",
            "controls mean [95 % CI]",
            "controls",
        ],
        body,
        numeric_from=2,
    )


def table_sweep(ctx: _Context) -> str:
    rows = ctx.rows["sweep"]
    counts = sorted({r["count"] for r in rows}, key=_num)
    cell = {(r["relation"], r["count"]): r for r in rows}
    rels = ctx.relations_of(r["relation"] for r in rows)
    body = [
        [rel]
        + [
            f"{pct(cell[(rel, c)]['own'])} / {pct(cell[(rel, c)]['others'])}"
            if (rel, c) in cell
            else ""
            for c in counts
        ]
        for rel in rels
    ]
    return _table(
        ["relation (own / others)"] + ["baseline" if _num(c) == 0 else fmt(c) for c in counts], body
    )


def table_cumulativity(ctx: _Context) -> str:
    rows = ctx.rows["cumulativity"]
    ranges = _ranges(ctx, rows)
    cell = {(r["relation"], (r["a"], r["b"])): r for r in rows}
    rels = ctx.relations_of(r["relation"] for r in rows)

    def show(r: dict[str, Any] | None) -> str:
        if r is None:
            return ""
        if not _num(r["total"]) > 0:
            return "n/a (total 0)"
        return f"{fmt(r['score'])} ({fmt(r['affected'])}/{fmt(r['total'])})"

    return _table(
        ["relation · score (affected/total)"] + [_range_label(x) for x in ranges],
        [[rel] + [show(cell.get((rel, x))) for x in ranges] for rel in rels],
    )


def table_overlap(ctx: _Context, limit: int = 20) -> str:
    pairs = [r for r in ctx.rows["overlap"] if str(r["a"]) < str(r["b"])]
    pairs.sort(key=lambda r: -np.nan_to_num(_num(r["jaccard"]), nan=-1.0))
    shown = pairs[:limit]
    caption = f"The {limit} most-overlapping of {len(pairs)} pairs." if len(pairs) > limit else None
    return _table(
        ["relation a", "relation b", "size a", "size b", "shared", "Jaccard"],
        [
            [
                r["a"],
                r["b"],
                fmt(r.get("size_a")),
                fmt(r.get("size_b")),
                fmt(r["shared"]),
                fmt(r["jaccard"], 3),
            ]
            for r in shown
        ],
        numeric_from=2,
        caption=caption,
    )


def table_interference(ctx: _Context) -> str:
    rows = sorted(ctx.rows["interference"], key=lambda r: -np.nan_to_num(_num(r["gain"])))
    return _table(
        ["evaluated relation", "neurons of", "baseline", "accuracy", "controls 95 % upper", "gain"],
        [
            [
                r["target"],
                r["ablated"],
                pct(r["baseline"]),
                pct(r["accuracy"]),
                pct(r.get("control_hi")),
                "—" if math.isnan(_num(r["gain"])) else f"{100 * _num(r['gain']):+.1f} pt",
            ]
            for r in rows
        ],
        numeric_from=2,
    )


def table_cross_lingual(ctx: _Context) -> str:
    rows = ctx.rows["cross_lingual"]
    langs = _ordered(ctx.study.get("languages") or [], [r["language"] for r in rows])
    body = []
    for lang in langs:
        sub = {r["relation"]: r for r in rows if r["language"] == lang}
        for rel in ctx.relations_of(sub):
            r = sub[rel]
            body.append(
                [
                    rel,
                    lang,
                    fmt(r.get("n")),
                    pct(r["baseline"]),
                    pct(r["accuracy"]),
                    pct(r["relative_drop"]),
                    _ci(r),
                ]
            )
    return _table(
        [
            "relation",
            "language",
            "n",
            "baseline",
            "top-k off",
            "relative drop",
            "controls mean [95 % CI]",
        ],
        body,
        numeric_from=2,
    )


def table_specificity(ctx: _Context) -> str:
    rows = ctx.rows["specificity"]
    sub = {r["relation"]: r for r in rows}
    return _table(
        ["relation", "perplexity baseline", "perplexity top-k off", "ratio"],
        [
            [
                rel,
                fmt(sub[rel]["ppl_baseline"]),
                fmt(sub[rel]["ppl_ablated"]),
                fmt(sub[rel]["ratio"], 3),
            ]
            for rel in ctx.relations_of(sub)
        ],
    )


# ---------------------------------------------------------------------------------------------
# Page assembly.


@dataclass
class _Context:
    summary: dict[str, Any]
    study: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def relations_of(self, seen: Iterable[Any]) -> list[Any]:
        return _ordered(self.study.get("relations") or [], list(seen))


@dataclass
class Section:
    key: str  # anchor id and summary field
    title: str
    figure: str | None  # PNG file name
    build: Callable[[_Context], Any] | None
    caption: str
    tables: tuple[Callable[[_Context], str], ...] = ()
    empty: str = "The summary holds no rows for this section."


def _sections(ctx: _Context) -> list[Section]:
    k = ctx.study.get("top_k")
    k = f"top-{k:,}" if isinstance(k, int) else "top-k"
    controls = ctx.study.get("controls")
    found = ctx.study.get("identify_language") or "en"
    return [
        Section(
            "baseline",
            "Baseline accuracy",
            None,
            None,
            "Accuracy with no neuron deactivated: share of prompts whose greedy answer "
            "matches the gold object, per relation, language and split.",
            (table_baseline,),
        ),
        Section(
            "intra",
            "Own-relation effect",
            "intra.png",
            fig_intra,
            f"For each relation, accuracy on its own prompts with no ablation (grey), with "
            f"its {k} neurons deactivated (red), and with as many random neurons of the "
            f"same per-layer counts deactivated (blue: mean over {fmt(controls)} control "
            "sets; error bars: 95 % interval of the control accuracies). One panel per "
            "split.",
            (table_intra,),
        ),
        Section(
            "sweep",
            "Sweep over the number of neurons",
            "sweep.png",
            fig_sweep,
            "Accuracy as more of each relation's top-ranked neurons are deactivated (log "
            "x-axis), on the relation's own prompts (red) and on every other relation's "
            "prompts (blue). The dashed lines are the accuracies with nothing deactivated "
            "(count 0, which a log axis cannot show).",
            (table_sweep,),
            empty="The summary holds no sweep with a positive number of neurons.",
        ),
        Section(
            "cumulativity",
            "Cumulativity over rank ranges",
            "cumulativity.png",
            fig_cumulativity,
            "For each range a–b of neurons deactivated, score = 1 − affected / total as "
            "computed by the study; grey cells have total = 0 (the score is undefined, "
            "not zero).",
            (table_cumulativity,),
        ),
        Section(
            "overlap",
            "Overlap of relations' neurons",
            "overlap.png",
            fig_overlap,
            f"Jaccard index |A ∩ B| / |A ∪ B| of two relations' {k} neuron sets; cell "
            "labels give the number of shared neurons (shown for up to "
            f"{ANNOTATE_MAX} relations). The table lists the most-overlapping pairs.",
            (table_overlap,),
        ),
        Section(
            "cross_relation",
            "Cross-relation effect",
            "cross_relation.png",
            fig_cross_relation,
            f"Row: the relation whose prompts are evaluated; column: the relation whose "
            f"{k} neurons are deactivated. Value: relative drop = 1 − accuracy / baseline. "
            "Red cells lost accuracy; blue cells (negative drop) gained accuracy, i.e. "
            "interference. Grey: no value (baseline accuracy 0). The table lists the "
            "interference cells the study found.",
            (table_interference,),
        ),
        Section(
            "cross_lingual",
            "Cross-lingual effect",
            "cross_lingual.png",
            fig_cross_lingual,
            f"Relative drop (1 − accuracy / baseline) of each relation's accuracy in each "
            f"language when the relation's {k} neurons found on {found} prompts are "
            "deactivated. Grey: no value.",
            (table_cross_lingual,),
            empty="The study evaluated no other language.",
        ),
        Section(
            "layers",
            "Layer distribution",
            "layers.png",
            fig_layers,
            f"Number of each relation's {k} neurons in each layer.",
        ),
        Section(
            "specificity",
            "Specificity (perplexity)",
            "specificity.png",
            fig_specificity,
            "Perplexity of relation-neutral text with no ablation and with each relation's "
            f"{k} neurons deactivated; labels give ablated / baseline.",
            (table_specificity,),
        ),
    ]


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
 max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
.headline{background:#f5f7fa;border-left:4px solid #1f77b4;padding:.6em 1em}
.headline p{margin:.3em 0}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:bottom;text-align:left;color:#666;font-size:12px;padding-top:4px}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:13px;max-width:900px}
.skip{color:#777;font-style:italic}.scroll{overflow-x:auto}
nav a{margin-right:.8em}
"""


def _study_table(study: dict[str, Any]) -> str:
    weights = str(study.get("weights_hash") or "")
    short = weights.split(":", 1)[-1][:12] if weights else ""
    sweep = study.get("sweep") or []
    ranges = study.get("ranges") or []
    langs = study.get("languages") or []
    rels = study.get("relations") or []
    sample = study.get("sample")
    units = study.get("units_total")
    top_k = study.get("top_k")
    share = (
        f" ({100 * top_k / units:.2f} % of units)"
        if isinstance(top_k, int) and isinstance(units, int) and units > 0
        else ""
    )
    items = [
        ("model", study.get("model") or "—"),
        ("weights", short or "—"),
        ("site", study.get("site") or "—"),
        ("units", fmt(units) if units is not None else "—"),
        ("top-k", (fmt(top_k) if top_k is not None else "—") + share),
        ("sweep", ", ".join(fmt(c) for c in sweep) or "—"),
        (
            "ranges",
            ", ".join(
                _range_label(tuple(r))
                for r in ranges
                if isinstance(r, list | tuple) and len(r) == 2
            )
            or "—",
        ),
        ("controls", fmt(study.get("controls")) if study.get("controls") is not None else "—"),
        (
            "sample",
            "all prompts"
            if sample is None
            else f"{fmt(sample)} prompts per relation × language × split",
        ),
        ("neurons found in", study.get("identify_language") or "—"),
        ("languages", ", ".join(map(str, langs)) or "—"),
        (f"relations ({len(rels)})", ", ".join(map(str, rels)) or "—"),
    ]
    skipped = study.get("skipped")
    if isinstance(skipped, dict) and skipped:
        items.append(
            (
                f"left out ({len(skipped)})",
                "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())),
            )
        )
    items += [
        ("warehouse", study.get("warehouse") or "—"),
    ]
    out = _table(["", ""], items, numeric_from=99).replace(
        "<thead><tr><th></th><th></th></tr></thead>", ""
    )
    seconds = study.get("seconds")
    if isinstance(seconds, dict) and seconds:
        total = sum(
            v for v in seconds.values() if isinstance(v, int | float) and not math.isnan(_num(v))
        )
        out += _table(
            ["stage", "wall time (s)"],
            [[k, fmt(v, 1)] for k, v in seconds.items()] + [["total", fmt(total, 1)]],
        )
    return out


def render(summary: dict[str, Any], out: Path | str, *, title: str | None = None) -> Path:
    """Write `index.html`, `summary.json` and the figures of `summary` into `out/`; return the
    path of `index.html`. Files of the same names are replaced atomically."""
    if not isinstance(summary, dict):
        raise FormatError(f"a study summary is a dict, not a {type(summary).__name__}")
    summary = clean_summary(summary)
    study = summary.get("study")
    if not isinstance(study, dict):
        raise FormatError(
            "summary['study'] is missing or not a dict; pass the dict that "
            "the findings module computed"
        )
    # Every section is checked before anything is created on disk.
    ctx = _Context(summary, study, {name: _rows(summary, name) for name in SECTION_KEYS})
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise WarehouseError(f"{out} is a file; pass a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    headline = compute_headline(summary)
    sentences = headline_sentences(headline, study.get("top_k"))

    # summary.json first: the page's numbers are checkable even if plotting fails.
    atomic_write_bytes(
        out / "summary.json", (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode()
    )

    sections = _sections(ctx)
    body: list[str] = []
    written: set[str] = set()
    for sec in sections:
        body.append(f'<section id="{esc(sec.key)}"><h2>{esc(sec.title)}</h2>')
        fig = sec.build(ctx) if sec.build is not None else None
        has_rows = bool(ctx.rows.get(sec.key))
        if sec.figure is not None and fig is not None:
            atomic_write_bytes(out / sec.figure, _png(fig))
            written.add(sec.figure)
            body.append(
                f'<figure><img src="{esc(sec.figure)}" alt="{esc(sec.title)}">'
                f"<figcaption>{esc(sec.caption)}</figcaption></figure>"
            )
        elif sec.figure is not None or not has_rows:
            body.append(f'<p class="skip">Skipped: {esc(sec.empty)}</p>')
        else:
            body.append(f"<p>{esc(sec.caption)}</p>")
        # The interference table belongs to cross_relation but has its own summary field.
        table_rows = (
            ctx.rows["interference"] if sec.key == "cross_relation" else ctx.rows.get(sec.key)
        )
        for tab in sec.tables:
            if sec.key == "cross_relation" and not table_rows and has_rows:
                body.append('<p class="skip">No interference cell.</p>')
            elif table_rows:
                body.append(f'<div class="scroll">{tab(ctx)}</div>')
        body.append("</section>")
    model = study.get("model") or "model"
    page_title = title if title is not None else f"Relation neurons of {model}"
    nav = " ".join(f'<a href="#{esc(s.key)}">{esc(s.title)}</a>' for s in sections)
    head_html = (
        "".join(f"<p>{esc(s)}</p>" for s in sentences)
        or '<p class="skip">No headline: the summary has no own-relation results.</p>'
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(page_title)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{esc(page_title)}</h1>
{_study_table(study)}
</header>
<div class="headline">{head_html}</div>
<nav>{nav}</nav>
{chr(10).join(body)}
<footer><p class="skip">Numbers from summary.json next to this page.</p></footer>
</body></html>
"""
    index = out / "index.html"
    atomic_write_bytes(index, page.encode("utf-8"))
    # A figure not drawn this time must not linger from an earlier render of this folder.
    # Removed after the new page is in place, so no page ever points at a removed file.
    for name in FIGURES:
        if name not in written:
            (out / name).unlink(missing_ok=True)
    return index
