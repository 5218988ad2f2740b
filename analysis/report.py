"""Render a study's *summary* (the JSON-able dict of `analysis.findings`) as an offline report.

`render(summary, out)` writes into `out/`:

- `index.html`: one self-contained page (inline CSS, no JS, no CDN) with the study header,
  the sentences of the summary's headline (the counts of `findings.headline`), one section per
  finding (figure + caption + compact table), and a note for every section the summary
  leaves empty;
- `summary.json`: the summary itself with the headline the page states, NaN/inf written as
  null, so the page's numbers can be checked or re-plotted without this tool;
- one PNG per non-empty figure (`FIGURES`), drawn with matplotlib's Agg canvas.

The renderer reads only the keys of the summary contract (docs/report.md), tolerates extra
keys and missing optional ones, and treats a missing section as an empty list. Every file is
written atomically (temp + rename), so a crash leaves the previous report or the new file,
never half of one; a figure skipped this time has its PNG of an earlier render removed, so
the folder never shows a stale figure next to a page that says the section is empty.
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

from warehouse.analysis import findings
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.files import atomic_write_bytes

try:  # the figures' one dependency is an extra: say which, before anything is read
    import matplotlib  # noqa: F401
except ImportError:
    raise WarehouseError(
        "the report needs matplotlib: pip install 'relation-warehouse[report]' (or matplotlib)"
    ) from None

# ~110 dpi: sharp on screen, small on disk. Figures are at most MAX_WIDTH inches wide, so
# at 110 dpi they fit the page's 1,180 px column without the browser shrinking their labels.
DPI = 110
MAX_WIDTH = 10.5
FIGURES = (
    "intra.png",
    "templates.png",
    "retention.png",
    "sweep.png",
    "cumulativity.png",
    "overlap.png",
    "cross_relation.png",
    "cross_lingual.png",
    "languages.png",
    "layers.png",
    "specificity.png",
)
# Cell annotations stay legible up to this many rows/columns; beyond, colour alone.
ANNOTATE_MAX = 16
SPLIT_ORDER = ("identify", "test")
CONDITIONS = ("baseline", "own", "controls")
# The verdicts of the own-vs-random test (analysis.findings), and their marks on figures.
BEYOND, NOT_BEYOND, UNDERPOWERED = "beyond controls", "not beyond controls", "underpowered"
NOT_TESTABLE = "not testable"  # a language cell whose baseline leaves too little to lose
MARKS = {BEYOND: "★", NOT_BEYOND: "n.s.", UNDERPOWERED: "u.p.", NOT_TESTABLE: "n.t."}
ALPHA = 0.05  # used only when the summary does not state its own
COLORS = {"baseline": "#9e9e9e", "own": "#d62728", "controls": "#1f77b4"}

_INTRA_KEYS = ("relation", "split", "n", "baseline", "target", "control_mean")
# Fields a record of each section must carry (the contract with analysis.findings).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "baseline": ("relation", "language", "split", "n", "accuracy"),
    "intra": _INTRA_KEYS,
    "templates": ("relation", "n", "baseline", "control_mean"),
    "sweep": ("relation", "count", "own", "others"),
    "cumulativity": ("relation", "a", "b", "total", "affected", "score"),
    "overlap": ("a", "b", "shared", "jaccard"),
    "cross_relation": ("target", "ablated", "baseline", "accuracy", "relative_drop"),
    "cross_lingual": ("relation", "language", "baseline", "relative_drop"),
    "language_overlap": ("relation", "language", "shared", "expected", "p", "verdict"),
    "language_ablation": ("relation", "set_language", "language", "baseline", "verdict"),
    "interference": ("target", "ablated", "baseline", "accuracy"),
    "specificity": ("relation", "ppl_baseline", "ppl_ablated", "ratio"),
    "layers": ("relation", "layer", "count"),
    "errors": ("relation", "condition", "answer", "count", "share"),
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


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _accuracy(r: dict[str, Any]) -> Any:
    """The accuracy with the neurons off: `target` in intra-like rows, `accuracy` elsewhere."""
    return r["target"] if "target" in r else r.get("accuracy")


def skipped_relations(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`study.skipped` as {relation: {prompts, subjects, why}}; an older {relation: why}
    form reads as the reason alone (counts unknown)."""
    raw = study.get("skipped")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for rel, v in raw.items():
        v = v if isinstance(v, dict) else {"why": v}
        out[rel] = {"prompts": v.get("prompts"), "subjects": v.get("subjects"), "why": v.get("why")}
    return out


# ---------------------------------------------------------------------------------------------
# Text formatting.


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage ("62.5 %"); None/NaN as an em dash."""
    v = _num(x)
    return "—" if math.isnan(v) else f"{100 * v:.{digits}f} %"


def pts(x: Any) -> str:
    """A difference of fractions in percentage points ("+12.5 pt")."""
    v = _num(x)
    return "—" if math.isnan(v) else f"{100 * v:+.1f} pt"


def fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    v = _num(x)
    return "—" if math.isnan(v) else f"{v:.{digits}f}"


def fmt_p(x: Any) -> str:
    """A p-value: 3 decimals, or 2 significant digits in e-notation below 0.001."""
    v = _num(x)
    if math.isnan(v):
        return "—"
    return f"{v:.1e}" if 0 < v < 0.001 else f"{v:.3f}"


def _interval(lo: Any, hi: Any, show: Callable[[Any], str] = pct) -> str:
    if math.isnan(_num(lo)) or math.isnan(_num(hi)):
        return "—"
    return f"[{show(lo)}, {show(hi)}]"


def n_label(r: dict[str, Any], n: str = "n", subjects: str = "n_subjects") -> str:
    """ "n=40 · 18 subj": prompts and distinct subjects of a row ("" when n is absent)."""
    if _int(r.get(n)) is None:
        return ""
    s = _int(r.get(subjects))
    return f"n={r[n]:,}" + ("" if s is None else f" · {s:,} subj")


def _span(values: Iterable[Any]) -> str | None:
    vals = [v for v in values if _int(v) is not None]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def n_span(rows: Sequence[dict[str, Any]], n: str = "n", subjects: str = "n_subjects") -> str:
    """ "n = 40–50 prompts, 18–22 subjects per cell" over `rows` ("" when no row has n)."""
    prompts = _span(r.get(n) for r in rows)
    if prompts is None:
        return ""
    subj = _span(r.get(subjects) for r in rows)
    return f"n = {prompts} prompts" + (f", {subj} subjects" if subj else "") + " per cell"


def _mean(values: Iterable[Any]) -> float:
    vals = [v for v in (_num(x) for x in values) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


# ---------------------------------------------------------------------------------------------
# Headline: the counts of findings.headline (their one home), in words; never means.


def _underpowered(study: dict[str, Any]) -> list[str]:
    raw = study.get("underpowered")
    return [str(r) for r in raw] if isinstance(raw, list) else []


def headline_of(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The headline the page states: `summary["headline"]` when it holds every key of this
    version's (`findings.HEADLINE_KEYS`); else `findings.headline` recomputed from the rows
    when they hold what it needs; else None (an older summary without verdicts: no counts)."""
    given = summary.get("headline")
    if isinstance(given, dict) and findings.HEADLINE_KEYS <= given.keys():
        return given
    try:
        return findings.headline(summary)
    except FormatError:
        return None


def _of(k: int, n: int, noun: str) -> str:
    return f"{k} of {n} {noun}{'' if n == 1 else 's'}"  # "2 of 4 relations"


def _beats_random(scope: str, k: int, n: int, top: str, a: str, same_counts: bool = False) -> str:
    """ "SCOPE, k of n relations (not underpowered) lose more under their own TOP neurons than
    under random sets (sign-flip test over subjects, Holm, α = 0.05)."""
    counts = " of the same per-layer counts" if same_counts else ""
    return (
        f"{scope}, {_of(k, n, 'relation')} (not underpowered) lose more under their own {top}"
        f"neurons than under random sets{counts} (sign-flip test over subjects, Holm, {a})."
    )


def _own_sentences(h: dict[str, Any], top: str, a: str) -> list[str]:
    if not h["relations"]:
        return []
    scope = f"On the {h['split']} split"
    return [
        _beats_random(scope, h["beyond_controls"], h["relations"], top, a, same_counts=True),
        f"{scope}, {_of(h['own_losses'], h['relations'], 'relation')} (not underpowered) lose "
        f"more prompts than they gain with their own {top}neurons off (exact one-sided "
        f"McNemar test, Holm, {a}, at least {h['min_discordant']} lost prompts).",
    ]


def _interference_sentence(h: dict[str, Any], a: str) -> str:
    return (
        f"{_of(h['interference_cells'], h['cross_cells'], 'relation pair')} (target not "
        "underpowered) show interference: the target gains more prompts than it loses when "
        "the other relation's neurons are off (exact one-sided McNemar test, Holm over all "
        f"off-diagonal cells, {a}, at least {h['min_discordant']} gained prompts)."
    )


def _underpowered_sentence(h: dict[str, Any]) -> str:
    n = len(h["underpowered"])
    return (
        f"{n} relation{'s are' if n != 1 else ' is'} underpowered (fewer than "
        f"{h['min_test_subjects']} test subjects) and left out of every count: "
        f"{', '.join(map(str, h['underpowered']))}."
    )


def _n_text(t: dict[str, Any]) -> str:
    return f"n = {t.get('n', 0):,} prompts, {t.get('n_subjects', 0):,} subjects"


def _cell_sentences(scope: str, t: dict[str, Any], a: str, min_discordant: int) -> list[str]:
    """A language cell tally: k of n tested relations beyond random sets with their prompts
    and subjects, and the not-testable relations apart (never counted as negatives)."""
    out = []
    if t["relations"]:
        out.append(
            _beats_random(scope, t["beyond_controls"], t["relations"], "", a).removesuffix(".")
        )
        out[-1] += f"; {_n_text(t)} over the tested relations."
    k = t.get("not_testable") or 0
    if k:
        out.append(
            f"{scope}, {k} relation{'s are' if k != 1 else ' is'} not testable (fewer than "
            f"{min_discordant} baseline-correct prompts) and counted neither way."
        )
    return out


def _language_set_sentences(h: dict[str, Any], a: str) -> list[str]:
    """The per-language sets: overlap with the identification set, then ablation cells."""
    out = [
        f"The {lang} set of {_of(t['beyond_chance'], t['cells'], 'relation')} shares more "
        "neurons with the identification language's set than random sets of the site's "
        f"neurons would (exact one-sided hypergeometric test, Holm over every cell, {a}); "
        f"{_n_text(t)} found it."
        for lang, t in (h.get("language_overlap") or {}).items()
        if t["cells"]
    ]
    for found, by_lang in (h.get("language_ablation") or {}).items():
        for lang, t in by_lang.items():
            scope = f"With the {found} set off, on {lang} prompts"
            out += _cell_sentences(scope, t, a, h["min_discordant"])
    return out


def headline_sentences(h: dict[str, Any], top_k: Any = None) -> list[str]:
    """Plain-text sentences (escaped by the caller) of a headline of `findings.headline`, one
    per count with something tested; each says k of n, the test, the correction and alpha."""
    a = f"α = {h['alpha']:g}"
    top = f"top-{top_k:,} " if _int(top_k) is not None else ""
    out = _own_sentences(h, top, a)
    if h["templates_relations"]:
        scope = "On prompts of templates held out of selection"
        out.append(_beats_random(scope, h["templates_beyond"], h["templates_relations"], "", a))
    for lang, t in h["languages"].items():
        out += _cell_sentences(f"In {lang}", t, a, h["min_discordant"])
    out += _language_set_sentences(h, a)
    if h["cross_cells"]:
        out.append(_interference_sentence(h, a))
    if h["underpowered"]:
        out.append(_underpowered_sentence(h))
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


def _title(ax, text: str, width: float, size: int = 11) -> None:
    # ~7 characters per inch of figure at 11 pt: wrap rather than clip a long title.
    ax.set_title(textwrap.fill(text, max(20, int(width * 7))), fontsize=size)


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


@dataclass
class Heat:
    """A heatmap: `matrix` coloured through `norm`; NaN cells grey (missing, never a value).
    `labels` (cell text) are in the colour bar's unit; `boxed` cells get a black outline
    (a test's positive); `blank_diagonal` whites out the diagonal (a set with itself)."""

    matrix: np.ndarray
    rows: Sequence[Any]
    cols: Sequence[Any]
    cmap: str
    norm: Any
    xlabel: str
    ylabel: str
    cbar_label: str
    title: str
    labels: np.ndarray | None = None
    boxed: np.ndarray | None = None
    blank_diagonal: bool = False
    cbar_ticks: dict[float, str] = field(default_factory=dict)


def _heatmap(h: Heat):
    from matplotlib import colormaps

    nr, nc = h.matrix.shape
    width = min(MAX_WIDTH, max(5.0, 2.6 + 0.6 * nc + 0.06 * max(len(str(r)) for r in h.rows)))
    fig = _new_figure(width, max(3.2, 1.8 + 0.45 * nr + 0.05 * max(len(str(c)) for c in h.cols)))
    ax = fig.add_subplot()
    cm = colormaps[h.cmap].with_extremes(bad="#d9d9d9")  # NaN cells: missing, grey
    im = ax.imshow(
        np.ma.masked_invalid(h.matrix), cmap=cm, norm=h.norm, aspect="auto", interpolation="nearest"
    )
    _label_axes(ax, h.rows, h.cols, h.xlabel, h.ylabel)
    _title(ax, h.title, width)
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label(h.cbar_label)
    if h.cbar_ticks:
        lo, hi = h.norm.vmin, h.norm.vmax
        ticks = {float(t): fmt(float(t), 0) for t in cb.get_ticks() if lo <= t <= hi}
        ticks.update(h.cbar_ticks)
        cb.set_ticks(sorted(ticks), labels=[ticks[t] for t in sorted(ticks)])
        for v in h.cbar_ticks:
            cb.ax.axhline(v, color="black", lw=1.2)
    _decorate_cells(ax, h, cm)
    return fig


def _decorate_cells(ax, h: Heat, cm) -> None:
    from matplotlib.patches import Rectangle

    nr, nc = h.matrix.shape
    for i in range(nr):
        for j in range(nc):
            diag = h.blank_diagonal and i == j
            if diag:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color="white", zorder=2))
            if h.boxed is not None and h.boxed[i, j]:
                ax.add_patch(
                    Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, ec="black", lw=2)
                )
            if h.labels is None or not h.labels[i, j]:
                continue
            v = h.matrix[i, j]
            # White text on dark cells (by luminance), black elsewhere.
            r, g, b, _ = cm(h.norm(v)) if np.isfinite(v) and not diag else (1, 1, 1, 1)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(
                j,
                i,
                h.labels[i, j],
                ha="center",
                va="center",
                zorder=3,
                fontsize=6 if nc > 24 else 7 if nc > 10 else 8,
                color="white" if dark else ("#777777" if diag else "black"),
            )


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


def _cells(
    rows: Sequence[dict[str, Any]], keys: tuple[str, str], value: Callable[[dict], Any]
) -> dict[tuple[Any, Any], Any]:
    return {(r[keys[0]], r[keys[1]]): value(r) for r in rows}


def _labels(m: np.ndarray, show: Callable[[float], str]) -> np.ndarray | None:
    if max(m.shape) > ANNOTATE_MAX:
        return None
    return np.array([[show(v) if np.isfinite(v) else "" for v in row] for row in m], dtype=object)


# --- bars: own-relation effect, templates, retention, specificity ------------------------------


@dataclass
class Series:
    key: str  # field of the row
    label: str
    color: str
    lo: str | None = None  # fields of the error bar's ends, if any
    hi: str | None = None


def _tick(rel: Any, r: dict[str, Any], under: set[str], n: str = "n", s: str = "n_subjects") -> str:
    label = f"{rel}\n{n_label(r, n, s)}".rstrip()
    return label + ("\n(underpowered)" if rel in under else "")


def _bars(
    ax, sub: dict[Any, dict[str, Any]], rels: list[Any], series: Sequence[Series], scale: float
):
    """Grouped bars, one group per relation; a missing value is said so ("n/a"), never drawn
    as a zero-height bar that reads as 0."""
    x = np.arange(len(rels))
    w = 0.8 / len(series)
    tops = np.zeros(len(rels))
    for i, s in enumerate(series):
        xs = x + (i - (len(series) - 1) / 2) * w
        y = np.array([scale * _num(sub[r].get(s.key)) for r in rels])
        ax.bar(xs, np.nan_to_num(y), w, color=s.color, label=s.label)
        tops = np.fmax(tops, np.nan_to_num(y))
        if s.lo and s.hi:
            tops = np.fmax(tops, _error_bars(ax, xs, y, sub, rels, s, scale))
        for xi in xs[~np.isfinite(y)]:
            ax.text(
                xi,
                0.02,
                "n/a",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                color=s.color,
            )
    return x, tops


def _error_bars(ax, xs, y, sub, rels, s: Series, scale: float) -> np.ndarray:
    lo = np.array([scale * _num(sub[r].get(s.lo)) for r in rels])
    hi = np.array([scale * _num(sub[r].get(s.hi)) for r in rels])
    ok = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
        ax.errorbar(xs[ok], y[ok], yerr=err[:, ok], fmt="none", ecolor="black", capsize=3, lw=1)
    return np.nan_to_num(np.where(ok, hi, 0.0))


def _bar_ticks(ax, x: np.ndarray, labels: list[str]) -> None:
    """Relation labels under bar groups: level while they fit, slanted beyond 6 groups."""
    ax.set_xticks(x)
    if len(labels) <= 6:
        ax.set_xticklabels(labels, fontsize=8)
    else:
        ax.set_xticklabels(labels, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)


def _mark_text(r: dict[str, Any]) -> str:
    """The test's mark above a relation's bars: ★ with the Holm p, n.s. with it, or u.p."""
    v = r.get("verdict")
    if v not in MARKS:
        return ""
    p = r.get("p_controls_holm")
    return MARKS[v] + ("" if v == UNDERPOWERED or p is None else f"\np={fmt_p(p)}")


EFFECT_SERIES = (
    Series("baseline", "baseline", COLORS["baseline"]),
    Series("target", "own top-k off", COLORS["own"]),
    Series(
        "control_mean",
        "random sets: mean; bar = 95 % prediction interval of one set",
        COLORS["controls"],
        "control_pi_lo",
        "control_pi_hi",
    ),
)


def _fade(ax, groups: list[int]) -> None:
    """Hatch and pale the bar groups of underpowered relations: shown, but not a finding."""
    for bars in ax.containers:
        for i in groups:
            if hasattr(bars, "patches"):
                bars.patches[i].set(alpha=0.35, hatch="//")


def _effect_panel(ax, ctx: _Context, rows: Sequence[dict[str, Any]], title: str) -> None:
    sub = {r["relation"]: r for r in rows}
    rels = ctx.relations_of(sub)
    x, tops = _bars(ax, sub, rels, EFFECT_SERIES, 100)
    _fade(ax, [i for i, r in enumerate(rels) if r in ctx.underpowered])
    for xi, top, rel in zip(x, tops, rels, strict=True):
        ax.text(xi, top + 2, _mark_text(sub[rel]), ha="center", va="bottom", fontsize=8)
    _bar_ticks(ax, x, [_tick(r, sub[r], ctx.underpowered) for r in rels])
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)


def _effect_figure(ctx: _Context, panels: list[tuple[str, list[dict[str, Any]]]]):
    n_rel = max(len({r["relation"] for r in rows}) for _, rows in panels)
    fig = _new_figure(max(6.5, 2.0 + 0.95 * n_rel), 4.0 * len(panels) + 0.5)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (title, rows) in zip(axes, panels, strict=True):
        _effect_panel(ax, ctx, rows, title)
    axes[0].legend(
        fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.12), ncol=3, frameon=False
    )
    return fig


def fig_intra(ctx: _Context):
    rows = ctx.rows["intra"]
    if not rows:
        return None
    splits = findings.ordered(SPLIT_ORDER, [r["split"] for r in rows])
    return _effect_figure(
        ctx, [(f"{s} split", [r for r in rows if r["split"] == s]) for s in splits]
    )


def fig_templates(ctx: _Context):
    rows = ctx.rows["templates"]
    if not rows:
        return None
    return _effect_figure(ctx, [("test split, prompts of held-out templates", rows)])


def _retention_rows(ctx: _Context) -> list[dict[str, Any]]:
    rows = ctx.rows["intra"]
    split = findings.headline_split(rows)
    return [r for r in rows if r["split"] == split and not math.isnan(_num(r.get("retention_own")))]


def fig_retention(ctx: _Context):
    rows = _retention_rows(ctx)
    if not rows:
        return None
    sub = {r["relation"]: r for r in rows}
    rels = ctx.relations_of(sub)
    fig = _new_figure(max(6.0, 2.0 + 0.8 * len(rels)), 4.0)
    ax = fig.add_subplot()
    series = (
        Series("retention_own", "own top-k off", COLORS["own"]),
        Series("retention_controls", "random sets (mean over sets)", COLORS["controls"]),
    )
    x, _ = _bars(ax, sub, rels, series, 100)
    ax.set_xticks(x)
    _bar_ticks(ax, x, [_tick(r, sub[r], ctx.underpowered, "retention_n", "") for r in rels])
    ax.set_ylim(0, 105)
    ax.set_ylabel("baseline-correct prompts still correct (%)")
    ax.set_title(f"Retention, {rows[0]['split']} split", fontsize=11)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


# --- sweep --------------------------------------------------------------------------------------


@dataclass
class Curve:
    xs: np.ndarray  # positive counts
    ys: np.ndarray  # accuracy (%)
    lo: np.ndarray  # bootstrap 95 % interval (%), NaN where absent
    hi: np.ndarray
    base: float  # accuracy at count 0 (%)


def _curve(rows: Sequence[dict[str, Any]], key: str) -> Curve:
    pts = sorted(rows, key=lambda r: _num(r["count"]))
    xs = np.array([_num(r["count"]) for r in pts])

    def col(k: str) -> np.ndarray:
        return np.array([100 * _num(r.get(k)) for r in pts])

    ys, base, pos = col(key), col(key)[xs == 0], xs > 0
    return Curve(
        xs[pos],
        ys[pos],
        col(f"{key}_lo")[pos],
        col(f"{key}_hi")[pos],
        float(base[0]) if base.size else math.nan,
    )


SWEEP_SERIES = (
    ("own", COLORS["own"], "own relation"),
    ("others", COLORS["controls"], "other relations"),
)


def _sweep_title(rel: Any, rows: Sequence[dict[str, Any]], under: set[str]) -> str:
    first = next((r for r in rows if _num(r["count"]) > 0), rows[0])
    own = n_label(first, "own_n", "own_subjects") or "n=—"
    others = n_label(first, "others_n", "others_subjects") or "n=—"
    flag = " (underpowered)" if rel in under else ""
    return f"{rel}{flag}\nown: {own}\nothers: {others}"


def _top_k_line(ax, top_k: Any) -> None:
    if _int(top_k) and top_k > 0:
        ax.axvline(top_k, color="black", ls=":", lw=1)
        ax.text(top_k, 103, f" top-{top_k:,}", fontsize=7, va="top", ha="left")


def _sweep_panel(ax, rel: Any, rows: Sequence[dict[str, Any]], ctx: _Context) -> None:
    for key, color, label in SWEEP_SERIES:
        c = _curve(rows, key)
        ax.plot(c.xs, c.ys, "o-", color=color, ms=3, lw=1.5, label=label)
        band = np.isfinite(c.lo) & np.isfinite(c.hi)
        if band.any():
            ax.fill_between(c.xs[band], c.lo[band], c.hi[band], color=color, alpha=0.18, lw=0)
        at_k = c.xs == _num(ctx.study.get("top_k"))
        ax.plot(c.xs[at_k], c.ys[at_k], "D", color=color, ms=7, mec="black")
        if not math.isnan(c.base):
            ax.axhline(c.base, color=color, ls="--", lw=1, alpha=0.7)
    _top_k_line(ax, ctx.study.get("top_k"))
    ax.set_xscale("log")
    ax.set_ylim(0, 105)
    ax.set_title(_sweep_title(rel, rows, ctx.underpowered), fontsize=8)
    ax.grid(alpha=0.3)


def fig_sweep(ctx: _Context):
    rows = ctx.rows["sweep"]
    if not any(_num(r["count"]) > 0 for r in rows):
        return None
    by_rel: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_rel.setdefault(r["relation"], []).append(r)
    rels = ctx.relations_of(by_rel)
    if len(rels) > ANNOTATE_MAX:
        return _sweep_many(ctx, [by_rel[r] for r in rels])
    ncols = min(4, len(rels))
    nrows = math.ceil(len(rels) / ncols)
    fig = _new_figure(3.3 * ncols + 0.4, 2.8 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat[len(rels) :]:
        ax.set_visible(False)
    for ax, rel in zip(axes.flat, rels, strict=False):
        _sweep_panel(ax, rel, by_rel[rel], ctx)
    for ax in axes[-1, :]:
        ax.set_xlabel("neurons deactivated")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    return fig


def _sweep_many(ctx: _Context, groups: list[list[dict[str, Any]]]):
    """Many relations: one panel, a thin line per relation and the mean over relations thick."""
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    for key, color, label in SWEEP_SERIES:
        curves = [_curve(rows, key) for rows in groups]
        for c in curves:
            ax.plot(c.xs, c.ys, "-", color=color, lw=0.6, alpha=0.3)
        counts = sorted({float(x) for c in curves for x in c.xs})
        means = [_mean(c.ys[c.xs == x][0] for c in curves if (c.xs == x).any()) for x in counts]
        ax.plot(counts, means, "o-", color=color, lw=2.2, label=f"{label} (mean)")
        base = _mean(c.base for c in curves)
        if not math.isnan(base):
            ax.axhline(base, color=color, ls="--", lw=1, label=f"{label} baseline (mean)")
    _top_k_line(ax, ctx.study.get("top_k"))
    ax.set_xscale("log")
    ax.set_ylim(0, 105)
    ax.set_xlabel("neurons deactivated")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# --- heatmaps -----------------------------------------------------------------------------------


def _ranges(ctx: _Context, rows: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    study_ranges = [
        tuple(r)
        for r in ctx.study.get("ranges") or []
        if isinstance(r, list | tuple) and len(r) == 2
    ]
    return findings.ordered(study_ranges, [(r["a"], r["b"]) for r in rows])


def _range_label(ab: tuple[Any, Any]) -> str:
    a, b = ab
    return f"{fmt(a)}–{fmt(b)}"


def fig_cumulativity(ctx: _Context):
    from matplotlib.colors import Normalize

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
    totals = _span(r["total"] for r in rows)
    return _heatmap(
        Heat(
            m,
            rels,
            [_range_label(r) for r in ranges],
            "viridis",
            Normalize(0, 1),
            xlabel="range a–b of neurons deactivated",
            ylabel="relation",
            cbar_label="score = 1 − affected / total",
            title=f"Cumulativity (cells: score; total = {totals} prompts per cell)",
            labels=_labels(m, lambda v: f"{v:.2f}"),
        )
    )


def _overlap_labels(ctx: _Context, rels: list[Any]) -> np.ndarray | None:
    if len(rels) > ANNOTATE_MAX:
        return None
    cell = {(r["a"], r["b"]): r for r in ctx.rows["overlap"]}

    def show(a: Any, b: Any) -> str:
        r = cell.get((a, b))
        if r is None:
            return ""
        if a == b:
            return f"size\n{fmt(r.get('size_a', r['shared']))}"
        e = _num(r.get("expected"))
        return fmt(r["shared"]) + ("" if math.isnan(e) else f"\n({e:.1f})")

    return np.array([[show(a, b) for b in rels] for a in rels], dtype=object)


def fig_overlap(ctx: _Context):
    from matplotlib.colors import Normalize

    rows = ctx.rows["overlap"]
    if not rows:
        return None
    rels = ctx.relations_of([r["a"] for r in rows] + [r["b"] for r in rows])
    m = _matrix(rels, rels, _cells(rows, ("a", "b"), lambda r: _num(r["shared"])))
    off = m[~np.eye(len(rels), dtype=bool)]
    # The diagonal (a set with itself, = its size) is left out of the colour scale.
    top = float(np.nanmax(off)) if np.isfinite(off).any() else 1.0
    chance = " (in brackets: expected for random sets of the same per-layer counts)"
    has_chance = any(r.get("expected") is not None for r in rows)
    return _heatmap(
        Heat(
            m,
            rels,
            rels,
            "Blues",
            Normalize(0, max(1.0, top)),
            xlabel="relation",
            ylabel="relation",
            cbar_label="shared neurons (off-diagonal cells)",
            title=f"Shared neurons of two relations' {ctx.top_k} sets"
            + (chance if has_chance else ""),
            labels=_overlap_labels(ctx, rels),
            blank_diagonal=True,
        )
    )


def _drop_norm(m: np.ndarray):
    from matplotlib.colors import Normalize

    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 100.0
    lim = lim if lim > 0 else 100.0
    return Normalize(-lim, lim)


def fig_cross_relation(ctx: _Context):
    rows = ctx.rows["cross_relation"]
    if not rows:
        return None
    targets = ctx.relations_of(r["target"] for r in rows)
    ablated = ctx.relations_of(r["ablated"] for r in rows)
    keys = ("target", "ablated")
    m = _matrix(targets, ablated, _cells(rows, keys, lambda r: 100 * _num(r["relative_drop"])))
    boxed = _matrix(targets, ablated, _cells(rows, keys, lambda r: r.get("interference") is True))
    return _heatmap(
        Heat(
            m,
            targets,
            ablated,
            "RdBu_r",
            _drop_norm(m),
            xlabel="neurons deactivated: top-k of relation",
            ylabel="evaluated relation",
            cbar_label="relative drop (%): red fell, blue rose",
            title="Cross-relation effect (cells: relative drop, %; boxed: interference by "
            f"the test; {n_span(rows)})",
            labels=_labels(m, lambda v: f"{v:+.0f}"),
            boxed=boxed == 1,
        )
    )


def _lingual_rows(ctx: _Context) -> list[dict[str, Any]]:
    """The cross-lingual rows, only when a language other than the identification one has
    any (else the section is not shown)."""
    rows = ctx.rows["cross_lingual"]
    found = ctx.study.get("identify_language")
    return rows if any(r["language"] != found for r in rows) else []


def fig_cross_lingual(ctx: _Context):
    rows = _lingual_rows(ctx)
    if not rows:
        return None
    rels = ctx.relations_of(r["relation"] for r in rows)
    langs = findings.ordered(ctx.study.get("languages") or [], [r["language"] for r in rows])
    keys = ("relation", "language")
    m = _matrix(rels, langs, _cells(rows, keys, lambda r: 100 * _num(r["relative_drop"])))
    labels = _verdict_labels(m, _cells(rows, keys, lambda r: r.get("verdict")), rels, langs)
    found = ctx.study.get("identify_language") or "en"
    return _heatmap(
        Heat(
            m,
            rels,
            langs,
            "RdBu_r",
            _drop_norm(m),
            xlabel="language of the prompts",
            ylabel="relation",
            cbar_label="relative drop (%): red fell, blue rose",
            title=f"Neurons found in {found}, test prompts per language (cells: relative "
            f"drop, %; ★ beyond controls; n.t. not testable; {n_span(rows)})",
            labels=labels,
        )
    )


def _verdict_labels(
    m: np.ndarray, verdicts: dict[tuple[Any, Any], Any], rows: list[Any], cols: list[Any]
) -> np.ndarray | None:
    """Cell labels of a relative-drop heatmap: the value, ★ when beyond controls, "n.t."
    (and no value) when not testable."""
    labels = _labels(m, lambda v: f"{v:+.0f}")
    if labels is None:
        return None
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            v = verdicts.get((r, c))
            if v == BEYOND:
                labels[i, j] += "★"
            elif v == NOT_TESTABLE:
                labels[i, j] = MARKS[NOT_TESTABLE]
    return labels


def _set_label(r: dict[str, Any]) -> str:
    return f"{r['relation']} · {r['set_language']} set"


def fig_languages(ctx: _Context):
    """Per-language sets off: rows = relation × language the set was found in, columns =
    language of the prompts."""
    rows = ctx.rows["language_ablation"]
    if not rows:
        return None
    rels = ctx.relations_of(r["relation"] for r in rows)
    langs = findings.ordered(ctx.study.get("languages") or [], [r["language"] for r in rows])
    found = findings.ordered(langs, [r["set_language"] for r in rows])
    sets = [f"{rel} · {x} set" for rel in rels for x in found]
    present = {_set_label(r) for r in rows}
    sets = [x for x in sets if x in present]
    by = {(_set_label(r), r["language"]): r for r in rows}
    m = _matrix(sets, langs, {k: 100 * _num(r.get("relative_drop")) for k, r in by.items()})
    labels = _verdict_labels(m, {k: r.get("verdict") for k, r in by.items()}, sets, langs)
    return _heatmap(
        Heat(
            m,
            sets,
            langs,
            "RdBu_r",
            _drop_norm(m),
            xlabel="language of the prompts",
            ylabel="set deactivated",
            cbar_label="relative drop (%): red fell, blue rose",
            title="Per-language neuron sets, test prompts per language (cells: relative "
            f"drop, %; ★ beyond controls; n.t. not testable; {n_span(rows)})",
            labels=labels,
        )
    )


def _layer_matrix(rows: list[dict[str, Any]], rels: list[Any]) -> tuple[np.ndarray, list[int]]:
    ok = [r for r in rows if not math.isnan(_num(r["layer"]))]
    layer_vals = [int(_num(r["layer"])) for r in ok]
    layers = list(range(min(0, min(layer_vals)), max(layer_vals) + 1))
    cells = {(r["relation"], int(_num(r["layer"]))): _num(r["count"]) for r in ok}
    # A layer with no selected neuron is a true 0 here (every layer was searched).
    m = _matrix(rels, layers, cells)
    return np.where(np.isnan(m), 0.0, m), layers


def fig_layers(ctx: _Context):
    from matplotlib.colors import Normalize, TwoSlopeNorm

    rows = ctx.rows["layers"]
    if not any(not math.isnan(_num(r["layer"])) for r in rows):
        return None
    rels = ctx.relations_of(r["relation"] for r in rows)
    m, layers = _layer_matrix(rows, rels)
    uniform = _mean(r.get("uniform") for r in rows)
    top = max(1.0, float(m.max()))
    labels = np.vectorize(lambda v: f"{v:.0f}" if v else "")(m) if len(layers) <= 40 else None
    heat = Heat(
        m,
        rels,
        layers,
        "YlOrRd",
        Normalize(0, top),
        xlabel="layer",
        ylabel="relation",
        cbar_label="neurons in the layer",
        title=f"Where each relation's {ctx.top_k} neurons sit (cells: neurons)",
        labels=labels if len(rels) <= ANNOTATE_MAX else None,
    )
    if 0 < uniform < top:
        # White = as many as a uniform random set of top-k would put in the layer.
        heat.cmap, heat.norm = "RdBu_r", TwoSlopeNorm(uniform, 0, top)
        heat.cbar_ticks = {uniform: f"uniform {uniform:.1f}"}
        heat.title += f"; white = uniform {uniform:.1f} per layer"
    return _heatmap(heat)


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
    series = [
        Series("ppl_baseline", "baseline", COLORS["baseline"]),
        Series("ppl_ablated", "own top-k off", COLORS["own"]),
    ]
    if any(r.get("ppl_controls") is not None for r in rows):
        series.append(
            Series(
                "ppl_controls",
                "random sets: mean; bar = range over sets",
                COLORS["controls"],
                "ppl_controls_lo",
                "ppl_controls_hi",
            )
        )
    fig = _new_figure(max(6.0, 2.0 + 0.8 * len(rels)), 3.8)
    ax = fig.add_subplot()
    x, tops = _bars(ax, sub, rels, series, 1)
    for i, r in enumerate(rels):
        ratio = _num(sub[r]["ratio"])
        if not math.isnan(ratio) and tops[i] > 0:
            ax.text(i, tops[i] * 1.02, f"×{ratio:.2f}", ha="center", va="bottom", fontsize=8)
    _bar_ticks(ax, x, [str(r) for r in rels])
    ax.set_ylabel("perplexity")
    ax.set_ylim(0, float(tops.max()) * 1.15 if tops.max() > 0 else 1.0)
    # Legend above the axes: inside, it would cover the ratio labels of the first bars.
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.02), ncol=3, frameon=False)
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

    def cls(i: int) -> str:
        return " class=num" if i >= numeric_from else ""

    out = ["<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append(
        "<thead><tr>"
        + "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(header))
        + "</tr></thead><tbody>"
    )
    for row in body:
        out.append(
            "<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _n_subj(r: dict[str, Any], n: str = "n", s: str = "n_subjects") -> str:
    """ "40 (18)": prompts (distinct subjects)."""
    subj = r.get(s)
    return fmt(r.get(n)) + ("" if _int(subj) is None else f" ({subj:,})")


def _p_holm(r: dict[str, Any], raw: str, holm: str) -> str:
    if r.get(raw) is None and r.get(holm) is None:
        return "—"
    return f"{fmt_p(r.get(raw))} (Holm {fmt_p(r.get(holm))})"


def _lost_gained(r: dict[str, Any]) -> str:
    if _int(r.get("lost")) is None or _int(r.get("gained")) is None:
        return "—"
    return f"{r['lost']:,} / {r['gained']:,}"


def _rel_name(ctx: _Context, rel: Any) -> str:
    return f"{rel} (underpowered)" if rel in ctx.underpowered else str(rel)


def _effect(r: dict[str, Any]) -> str:
    """ "+12.5 pt [+3.0 pt, +22.0 pt]": the effect with its interval, or what of it exists."""
    ci = _interval(r.get("effect_lo"), r.get("effect_hi"), pts)
    return pts(r.get("effect")) + ("" if ci == "—" else f" {ci}")


def _effect_cells(r: dict[str, Any]) -> list[str]:
    """The own-vs-random columns shared by intra, templates and cross-lingual tables."""
    return [
        pct(r["baseline"]),
        pct(_accuracy(r)),
        pct(r.get("control_mean")),
        _interval(r.get("control_pi_lo"), r.get("control_pi_hi")),
        _effect(r),
        _p_holm(r, "p_controls", "p_controls_holm"),
        _lost_gained(r),
        _p_holm(r, "p_mcnemar", "p_mcnemar_holm"),
        str(r.get("verdict") or "—"),
    ]


EFFECT_HEADER = [
    "n (subjects)",
    "baseline",
    "own top-k off",
    "random sets: mean",
    "one random set: 95 % PI",
    "effect [95 % CI]",
    "p own vs random",
    "lost / gained",
    "p McNemar",
    "verdict",
]


def _effect_table(ctx: _Context, rows: Sequence[dict[str, Any]], group: str) -> str:
    groups = findings.ordered(
        SPLIT_ORDER if group == "split" else ctx.study.get("languages") or [],
        [r[group] for r in rows],
    )
    body = []
    for g in groups:
        sub = {r["relation"]: r for r in rows if r[group] == g}
        for rel in ctx.relations_of(sub):
            body.append([_rel_name(ctx, rel), g, _n_subj(sub[rel]), *_effect_cells(sub[rel])])
    return _table(["relation", group, *EFFECT_HEADER], body, numeric_from=2)


def table_intra(ctx: _Context) -> str:
    return _effect_table(ctx, ctx.rows["intra"], "split")


def table_templates(ctx: _Context) -> str:
    return _effect_table(ctx, ctx.rows["templates"], "split")


def table_template_split(ctx: _Context) -> str:
    rows = [r for r in ctx.rows["templates"] if r.get("test_templates")]
    if not rows:
        return ""
    return _table(
        ["relation", "templates in selection", "held-out templates (test)"],
        [
            [
                r["relation"],
                fmt(len(r.get("select_templates") or [])),
                " | ".join(map(str, r["test_templates"])),
            ]
            for r in rows
        ],
        numeric_from=1,
    )


def table_cross_lingual(ctx: _Context) -> str:
    return _effect_table(ctx, _lingual_rows(ctx), "language")


def table_language_overlap(ctx: _Context) -> str:
    found = ctx.study.get("identify_language") or "en"
    rows = ctx.rows["language_overlap"]
    body = [
        [
            _rel_name(ctx, r["relation"]),
            str(r["language"]),
            _n_subj(r),
            fmt(r.get("size_a")),
            fmt(r.get("size_b")),
            fmt(r.get("population")),
            fmt(r["shared"]),
            fmt(r["expected"], 2),
            fmt(r.get("expected_layers"), 2),
            _p_holm(r, "p", "p_holm"),
            str(r["verdict"]),
        ]
        for rel in ctx.relations_of(r["relation"] for r in rows)
        for r in rows
        if r["relation"] == rel
    ]
    header = [
        "relation",
        "language",
        "identification prompts (subjects)",
        f"{found} set",
        "language's set",
        "neurons",
        "shared",
        "expected by chance",
        "expected, same per-layer counts",
        "p hypergeometric",
        "verdict",
    ]
    return _table(header, body, numeric_from=2)


def table_language_ablation(ctx: _Context) -> str:
    rows = ctx.rows["language_ablation"]
    langs = findings.ordered(ctx.study.get("languages") or [], [r["language"] for r in rows])
    body = []
    for rel in ctx.relations_of(r["relation"] for r in rows):
        of_rel = [r for r in rows if r["relation"] == rel]
        for found in findings.ordered(langs, [r["set_language"] for r in of_rel]):
            cells = {r["language"]: r for r in of_rel if r["set_language"] == found}
            for lang in [x for x in langs if x in cells]:
                r = cells[lang]
                name = [_rel_name(ctx, rel), str(found), str(lang), _n_subj(r)]
                body.append(name + _effect_cells(r))
    header = ["relation", "set found in", "prompts in", *EFFECT_HEADER]
    return _table(header, body, numeric_from=3)


def table_retention(ctx: _Context) -> str:
    rows = {r["relation"]: r for r in _retention_rows(ctx)}
    body = []
    for rel in ctx.relations_of(rows):
        r = rows[rel]
        diff = _num(r.get("retention_controls")) - _num(r["retention_own"])
        body.append(
            [
                _rel_name(ctx, rel),
                r["split"],
                fmt(r.get("retention_n")),
                pct(r["retention_own"]),
                pct(r.get("retention_controls")),
                pts(diff),
            ]
        )
    return _table(
        [
            "relation",
            "split",
            "baseline-correct prompts",
            "retained: own top-k off",
            "retained: random sets (mean)",
            "random − own",
        ],
        body,
        numeric_from=2,
    )


def table_baseline(ctx: _Context) -> str:
    rows = ctx.rows["baseline"]
    cols = findings.ordered(
        [(lang, s) for lang in ctx.study.get("languages") or [] for s in SPLIT_ORDER],
        [(r["language"], r["split"]) for r in rows],
    )
    cell = {(r["relation"], r["language"], r["split"]): r for r in rows}
    body = []
    for rel in ctx.relations_of(r["relation"] for r in rows):
        line = [rel]
        for lang, s in cols:
            r = cell.get((rel, lang, s))
            line.append("" if r is None else f"{pct(r['accuracy'])} ({n_label(r)})")
        body.append(line)
    return _table(["relation"] + [f"{lang} · {s}" for lang, s in cols], body)


def table_sweep(ctx: _Context) -> str:
    rows = ctx.rows["sweep"]
    counts = sorted({r["count"] for r in rows}, key=_num)
    cell = {(r["relation"], r["count"]): r for r in rows}
    top_k = ctx.study.get("top_k")

    def show(r: dict[str, Any] | None) -> str:
        return "" if r is None else f"{pct(r['own'])} / {pct(r['others'])}"

    def head(c: Any) -> str:
        return "baseline" if _num(c) == 0 else fmt(c) + (" (top-k)" if c == top_k else "")

    def n(rel: Any) -> str:
        r = next((r for r in rows if r["relation"] == rel and _num(r["count"]) > 0), {})
        own, others = _n_subj(r, "own_n", "own_subjects"), _n_subj(r, "others_n", "others_subjects")
        return f"{own} / {others}"

    body = [
        [rel, n(rel)] + [show(cell.get((rel, c))) for c in counts]
        for rel in ctx.relations_of(r["relation"] for r in rows)
    ]
    header = ["relation (own / others)", "n (subjects)"] + [head(c) for c in counts]
    return _table(header, body)


def table_cumulativity(ctx: _Context) -> str:
    rows = ctx.rows["cumulativity"]
    ranges = _ranges(ctx, rows)
    cell = {(r["relation"], (r["a"], r["b"])): r for r in rows}

    def show(r: dict[str, Any] | None) -> str:
        if r is None:
            return ""
        if not _num(r["total"]) > 0:
            return "n/a (total 0)"
        return f"{fmt(r['score'])} ({fmt(r['affected'])}/{fmt(r['total'])})"

    return _table(
        ["relation · score (affected/total)"] + [_range_label(x) for x in ranges],
        [
            [rel] + [show(cell.get((rel, x))) for x in ranges]
            for rel in ctx.relations_of(r["relation"] for r in rows)
        ],
    )


def table_overlap(ctx: _Context, limit: int = 20) -> str:
    pairs = [r for r in ctx.rows["overlap"] if str(r["a"]) < str(r["b"])]
    pairs.sort(key=lambda r: -np.nan_to_num(_num(r["shared"]), nan=-1.0))
    caption = f"The {limit} most-overlapping of {len(pairs)} pairs." if len(pairs) > limit else None

    def ratio(r: dict[str, Any]) -> str:
        e = _num(r.get("expected"))
        return "—" if not e > 0 else f"×{_num(r['shared']) / e:.1f}"

    return _table(
        [
            "relation a",
            "relation b",
            "size a",
            "size b",
            "shared",
            "expected by chance",
            "shared / expected",
            "Jaccard",
        ],
        [
            [
                r["a"],
                r["b"],
                fmt(r.get("size_a")),
                fmt(r.get("size_b")),
                fmt(r["shared"]),
                fmt(r.get("expected"), 1),
                ratio(r),
                fmt(r["jaccard"], 3),
            ]
            for r in pairs[:limit]
        ],
        numeric_from=2,
        caption=caption,
    )


def interference_cells(ctx: _Context) -> list[dict[str, Any]]:
    """The cells the test found (interference == true), from `interference` and from
    `cross_relation`, once each; rows without the test's flag are not shown."""
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in ctx.rows["interference"] + ctx.rows["cross_relation"]:
        if r.get("interference") is True and r["target"] != r["ablated"]:
            seen.setdefault((r["target"], r["ablated"]), r)
    return sorted(seen.values(), key=lambda r: _num(r.get("p_gain_holm")))


def table_interference(ctx: _Context) -> str:
    rows = interference_cells(ctx)
    if not rows:
        return ""
    return _table(
        [
            "evaluated relation",
            "neurons of",
            "n (subjects)",
            "baseline",
            "accuracy",
            "lost / gained",
            "p gain (McNemar)",
        ],
        [
            [
                r["target"],
                r["ablated"],
                _n_subj(r),
                pct(r["baseline"]),
                pct(r["accuracy"]),
                _lost_gained(r),
                _p_holm(r, "p_gain", "p_gain_holm"),
            ]
            for r in rows
        ],
        numeric_from=2,
    )


def table_specificity(ctx: _Context) -> str:
    sub = {r["relation"]: r for r in ctx.rows["specificity"]}
    return _table(
        [
            "relation",
            "perplexity baseline",
            "perplexity top-k off",
            "ratio",
            "random sets: mean",
            "random sets: range",
        ],
        [
            [
                rel,
                fmt(r["ppl_baseline"]),
                fmt(r["ppl_ablated"]),
                fmt(r["ratio"], 3),
                fmt(r.get("ppl_controls")),
                _interval(r.get("ppl_controls_lo"), r.get("ppl_controls_hi"), fmt),
            ]
            for rel, r in ((rel, sub[rel]) for rel in ctx.relations_of(sub))
        ],
    )


def _answers(rows: Iterable[dict[str, Any]]) -> str:
    ranked = sorted(rows, key=lambda r: -_num(r["count"]))
    return "; ".join(
        f"“{r['answer']}” {fmt(r['count'])} ({pct(r['share'], 0)})"
        if r["answer"] != ""
        else f"(empty) {fmt(r['count'])} ({pct(r['share'], 0)})"
        for r in ranked
    )


def table_errors(ctx: _Context) -> str:
    rows = ctx.rows["errors"]
    conds = findings.ordered(CONDITIONS, [r["condition"] for r in rows])
    test = {r["relation"]: r for r in ctx.rows["intra"] if r["split"] == "test"}
    body = [
        [rel, _n_subj(test.get(rel, {}))]
        + [_answers(r for r in rows if r["relation"] == rel and r["condition"] == c) for c in conds]
        for rel in ctx.relations_of(r["relation"] for r in rows)
    ]
    header = {"baseline": "baseline", "own": "own top-k off", "controls": "random sets"}
    return _table(
        ["relation", "test n (subjects)"] + [header.get(c, c) for c in conds], body, numeric_from=99
    )


def table_skipped(ctx: _Context) -> str:
    skipped = skipped_relations(ctx.study)
    return _table(
        ["relation", "correct identification prompts", "their subjects", "why"],
        [
            [rel, fmt(v["prompts"]), fmt(v["subjects"]), str(v["why"] or "—")]
            for rel, v in sorted(skipped.items())
        ],
        numeric_from=1,
    )


# ---------------------------------------------------------------------------------------------
# Captions: what every interval is, and which test every mark comes from.

DEFAULT_TESTS = {
    "controls": "one-sided sign-flip permutation test over subjects of the per-prompt "
    "difference d = (mean accuracy of the random sets) − (own-set accuracy)",
    "mcnemar": "exact one-sided McNemar test on the prompts own-off and baseline disagree on",
    "bootstrap": "subject-cluster bootstrap",
    "interference": "exact one-sided McNemar test (gained more than lost), Holm over all "
    "off-diagonal cells",
}


@dataclass
class _Context:
    summary: dict[str, Any]
    study: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    underpowered: set[str] = field(default_factory=set)
    headline: dict[str, Any] | None = None  # headline_of(summary)

    def relations_of(self, seen: Iterable[Any]) -> list[Any]:
        return findings.ordered(self.study.get("relations") or [], list(seen))

    def test(self, name: str) -> str:
        """The test's name as the summary states it (`study.tests`), else ours."""
        given = self.study.get("tests")
        named = given.get(name) if isinstance(given, dict) else None
        return str(named) if named else DEFAULT_TESTS[name]

    @property
    def top_k(self) -> str:
        k = self.study.get("top_k")
        return f"top-{k:,}" if _int(k) is not None else "top-k"

    @property
    def alpha(self) -> str:
        a = _num(self.study.get("alpha"))
        return f"α = {ALPHA if math.isnan(a) else a:g}"


def _pi_text(ctx: _Context) -> str:
    c = fmt(ctx.study.get("controls")) if ctx.study.get("controls") is not None else "C"
    return (
        f"blue: mean over the {c} random sets of the same per-layer counts; its error bar is "
        "the 95 % prediction interval for the accuracy of ONE random set (mean ± t·s·√(1 + 1/C) "
        "over the C sets, clipped to 0–100 %), not a confidence interval of their mean"
    )


def _marks_text(ctx: _Context) -> str:
    perms = _int(ctx.study.get("permutations"))
    perm = f" ({perms:,} permutations)" if perms else ""
    least = _int(ctx.study.get("min_discordant"))
    rule = ctx.study.get("min_test_subjects")
    return (
        f"Marks: ★ = verdict “{BEYOND}”: {ctx.test('controls')}{perm}, Holm-corrected over "
        f"the study's relations, {ctx.alpha}"
        + (f", with at least {least} discordant prompts" if least else "")
        + f"; p above the bars is Holm-adjusted. n.s. = “{NOT_BEYOND}”. u.p. = “{UNDERPOWERED}”"
        + (f" (fewer than {rule} test subjects)" if rule else "")
        + ": no verdict, left out of every count; its bars are pale and hatched."
    )


def _table_text(ctx: _Context) -> str:
    boot = _int(ctx.study.get("bootstrap"))
    return (
        "Table: n = prompts (distinct subjects). effect = mean over prompts of d, in points "
        "(positive: the own set hurts more than random sets), with its 95 % "
        f"{ctx.test('bootstrap')} interval"
        + (f" ({boot:,} resamples)" if boot else "")
        + f". lost / gained = prompts right at baseline and wrong with the own set off / the "
        f"reverse; p McNemar: {ctx.test('mcnemar')}. Each p is given raw and Holm-adjusted."
    )


def caption_intra(ctx: _Context) -> str:
    return (
        f"Accuracy on each relation's own prompts with no ablation (grey), with its {ctx.top_k} "
        f"neurons deactivated (red); {_pi_text(ctx)}. Under each relation: n prompts · "
        f"distinct subjects. One panel per split. {_marks_text(ctx)} {_table_text(ctx)}"
    )


def caption_templates(ctx: _Context) -> str:
    return (
        "The same comparison on test-split prompts whose template was held out of neuron "
        f"selection (relations with at least 2 templates): grey baseline, red {ctx.top_k} "
        f"neurons off; {_pi_text(ctx)}. {_marks_text(ctx)} {_table_text(ctx)}"
    )


def caption_retention(ctx: _Context) -> str:
    return (
        "Retention (P^det): of the prompts the model answers correctly with no ablation "
        f"(n under each relation), the share still correct with the {ctx.top_k} neurons off "
        "(red) and with random sets of the same per-layer counts (blue, mean over the sets). "
        "Descriptive: the tests are those of the own-relation section."
    )


def caption_sweep(ctx: _Context) -> str:
    return (
        "Accuracy as more of each relation's top-ranked neurons are deactivated (log x-axis), "
        "on the relation's own prompts (red) and on every other relation's prompts (blue); "
        f"shaded: 95 % {ctx.test('bootstrap')} interval of the accuracy. Dashed lines: "
        "accuracy with nothing deactivated (count 0, which a log axis cannot show). Dotted "
        f"line and diamonds: the study's {ctx.top_k}. Panel titles: n prompts · distinct "
        "subjects of the own and the other relations' prompts."
    )


def caption_overlap(ctx: _Context) -> str:
    return (
        f"Cells: neurons shared by two relations' {ctx.top_k} sets; in brackets, the overlap "
        "expected for two random sets with the same per-layer counts (sum over layers of "
        "a_l·b_l / units per layer). The diagonal (a set with itself: its size) is white and "
        f"left out of the colour scale. Labels are shown for up to {ANNOTATE_MAX} relations; "
        "the table lists the most-overlapping pairs with their Jaccard index."
    )


def caption_cross_relation(ctx: _Context) -> str:
    return (
        f"Row: the relation whose prompts are evaluated; column: the relation whose {ctx.top_k} "
        "neurons are deactivated. Cells: relative drop = 1 − accuracy / baseline, in %. Red "
        "cells lost accuracy, blue cells gained. Grey: no value (baseline accuracy 0). Boxed: "
        f"interference by the test ({ctx.test('interference')}, {ctx.alpha}"
        + (
            f", at least {ctx.study['min_discordant']} gained prompts"
            if _int(ctx.study.get("min_discordant"))
            else ""
        )
        + ", target not underpowered). The table lists exactly those cells."
    )


def caption_cross_lingual(ctx: _Context) -> str:
    found = ctx.study.get("identify_language") or "en"
    return (
        f"Relative drop (1 − accuracy / baseline, %) of each relation's test prompts in each "
        f"language when its {ctx.top_k} neurons, found on {found} prompts, are deactivated. "
        f"★: verdict “{BEYOND}” in that language ({ctx.test('controls')}, Holm, {ctx.alpha}). "
        "The table gives the own-relation comparison per language, with the same columns "
        "as the own-relation table (one random set: 95 % prediction interval, not a "
        "confidence interval of the mean)."
    )


def caption_languages(ctx: _Context) -> str:
    found = ctx.study.get("identify_language") or "en"
    least = _int(ctx.study.get("min_discordant"))
    return (
        f"Each relation's {ctx.top_k} neurons found on the prompts of one language (row: "
        f"relation · that language; the {found} set is the study's own), deactivated on the "
        "relation's test prompts in each language (column). Cells: relative drop = 1 − "
        f"accuracy / baseline, in %. ★: verdict “{BEYOND}” ({ctx.test('controls')}, Holm "
        f"over the relations of each set-language × prompt-language cell, {ctx.alpha}). "
        f"n.t. = “{NOT_TESTABLE}”: fewer baseline-correct prompts"
        + (f" than {least}" if least else "")
        + ", so the set cannot lose the discordant prompts a verdict needs; no number is "
        "shown. First table: the neurons each language's set shares with the "
        f"{found} set, beside the count expected of a set drawn uniformly from the site's "
        "neurons (and, descriptive, of one with the same per-layer counts), with an exact "
        "one-sided hypergeometric test, Holm over the rows. Second table: every cell with "
        "the own-relation table's columns."
    )


def caption_layers(ctx: _Context) -> str:
    return (
        f"Number of each relation's {ctx.top_k} neurons in each layer. When the summary gives "
        "the uniform reference (top-k / number of layers: what a uniform random set would put "
        "in each layer), it is white on the colour scale: red layers hold more, blue fewer."
    )


def caption_specificity(ctx: _Context) -> str:
    return (
        "Perplexity of relation-neutral text with no ablation (grey), with each relation's "
        f"{ctx.top_k} neurons deactivated (red; label: ablated / baseline) and, when the study "
        "computed them, with random sets of the same per-layer counts (blue: mean over the "
        "sets; error bar: their range, min to max)."
    )


# ---------------------------------------------------------------------------------------------
# Page assembly.


@dataclass
class Section:
    key: str  # anchor id
    title: str
    figure: str | None  # PNG file name
    build: Callable[[_Context], Any] | None
    caption: Callable[[_Context], str]
    tables: tuple[Callable[[_Context], str], ...] = ()
    present: Callable[[_Context], list] | None = None  # rows that make it non-empty
    empty: str = "The summary holds no rows for this section."
    hidden_when_empty: bool = False  # not on the page at all when empty

    def rows(self, ctx: _Context) -> list:
        return self.present(ctx) if self.present is not None else ctx.rows.get(self.key, [])


def _text(s: str) -> Callable[[_Context], str]:
    return lambda _ctx: s


# The page's sections, in order.
SECTIONS: tuple[Section, ...] = (
    Section(
        "baseline",
        "Baseline accuracy",
        None,
        None,
        _text(
            "Accuracy with no neuron deactivated: share of prompts whose greedy answer matches "
            "the gold object, per relation, language and split; n prompts · distinct subjects."
        ),
        (table_baseline,),
    ),
    Section("intra", "Own-relation effect", "intra.png", fig_intra, caption_intra, (table_intra,)),
    Section(
        "templates",
        "Held-out templates",
        "templates.png",
        fig_templates,
        caption_templates,
        (table_templates, table_template_split),
        empty="No relation had 2 or more templates to hold one out.",
    ),
    Section(
        "retention",
        "Retention (P^det)",
        "retention.png",
        fig_retention,
        caption_retention,
        (table_retention,),
        present=_retention_rows,
        empty="The summary holds no retention numbers.",
    ),
    Section(
        "errors",
        "Error analysis: most frequent answers",
        None,
        None,
        _text(
            "The most frequent answers (normalised continuation, count and share of the test "
            "prompts) per relation, with no ablation, with the own top-k off, and with random "
            "sets (pooled over the sets)."
        ),
        (table_errors,),
    ),
    Section(
        "sweep",
        "Sweep over the number of neurons",
        "sweep.png",
        fig_sweep,
        caption_sweep,
        (table_sweep,),
        empty="The summary holds no sweep with a positive number of neurons.",
    ),
    Section(
        "cumulativity",
        "Cumulativity over rank ranges",
        "cumulativity.png",
        fig_cumulativity,
        _text(
            "For each range a–b of neurons deactivated, score = 1 − affected / total "
            "as computed by the study; grey cells have total = 0 (the score is "
            "undefined, not zero). Descriptive: no test."
        ),
        (table_cumulativity,),
    ),
    Section(
        "overlap",
        "Overlap of relations' neurons",
        "overlap.png",
        fig_overlap,
        caption_overlap,
        (table_overlap,),
    ),
    Section(
        "cross_relation",
        "Cross-relation effect",
        "cross_relation.png",
        fig_cross_relation,
        caption_cross_relation,
        (table_interference,),
    ),
    Section(
        "cross_lingual",
        "Cross-lingual effect",
        "cross_lingual.png",
        fig_cross_lingual,
        caption_cross_lingual,
        (table_cross_lingual,),
        present=_lingual_rows,
        hidden_when_empty=True,
    ),
    Section(
        "languages",
        "Language-specific neurons",
        "languages.png",
        fig_languages,
        caption_languages,
        (table_language_overlap, table_language_ablation),
        present=lambda ctx: ctx.rows["language_ablation"] or ctx.rows["language_overlap"],
        hidden_when_empty=True,
    ),
    Section("layers", "Layer distribution", "layers.png", fig_layers, caption_layers),
    Section(
        "specificity",
        "Specificity (perplexity)",
        "specificity.png",
        fig_specificity,
        caption_specificity,
        (table_specificity,),
    ),
    Section(
        "skipped",
        "Relations left out",
        None,
        None,
        _text(
            "Relations the study did not analyse, with their correct identification prompts "
            "and distinct subjects, and why."
        ),
        (table_skipped,),
        present=lambda ctx: list(skipped_relations(ctx.study)),
        empty="No relation was left out.",
    ),
)


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


def _study_items(study: dict[str, Any]) -> list[tuple[str, str]]:
    weights = str(study.get("weights_hash") or "")
    units, top_k, sample = study.get("units_total"), study.get("top_k"), study.get("sample")
    share = (
        f" ({100 * top_k / units:.2f} % of units)"
        if _int(top_k) is not None and _int(units) and units > 0
        else ""
    )
    ranges = [
        _range_label(tuple(r))
        for r in study.get("ranges") or []
        if isinstance(r, list | tuple) and len(r) == 2
    ]
    rels = study.get("relations") or []
    under = _underpowered(study)
    return [
        ("model", study.get("model") or "—"),
        ("weights", weights.split(":", 1)[-1][:12] if weights else "—"),
        ("site", study.get("site") or "—"),
        ("units", fmt(units) if units is not None else "—"),
        ("top-k", (fmt(top_k) if top_k is not None else "—") + share),
        ("sweep", ", ".join(fmt(c) for c in study.get("sweep") or []) or "—"),
        ("ranges", ", ".join(ranges) or "—"),
        (
            "random sets per condition",
            fmt(study.get("controls")) if study.get("controls") is not None else "—",
        ),
        (
            "sample",
            "all prompts"
            if sample is None
            else f"{fmt(sample)} prompts per relation × language × split",
        ),
        ("neurons found in", study.get("identify_language") or "—"),
        ("languages", ", ".join(map(str, study.get("languages") or [])) or "—"),
        (
            f"relations ({len(rels)}, {len(under)} underpowered)",
            ", ".join(_rel_label(r, under) for r in rels) or "—",
        ),
        ("left out", _plural(len(skipped_relations(study)), "relation") + " (see below)"),
        (
            "tests",
            f"α = {ALPHA if math.isnan(_num(study.get('alpha'))) else study['alpha']:g}, "
            "Holm correction within each family of tests",
        ),
        ("warehouse", study.get("warehouse") or "—"),
    ]


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _rel_label(rel: Any, under: list[str]) -> str:
    return f"{rel} (underpowered)" if rel in under else str(rel)


def _study_table(study: dict[str, Any]) -> str:
    out = _table(["", ""], _study_items(study), numeric_from=99).replace(
        "<thead><tr><th></th><th></th></tr></thead>", ""
    )
    seconds = study.get("seconds")
    if isinstance(seconds, dict) and seconds:
        total = sum(v for v in seconds.values() if not math.isnan(_num(v)))
        out += _table(
            ["stage", "wall time (s)"],
            [[k, fmt(v, 1)] for k, v in seconds.items()] + [["total", fmt(total, 1)]],
        )
    return out


def _context(summary: Any) -> tuple[dict[str, Any], _Context]:
    """The cleaned summary and its checked sections; raises before anything is written."""
    if not isinstance(summary, dict):
        raise FormatError(f"a study summary is a dict, not a {type(summary).__name__}")
    summary = clean_summary(summary)
    study = summary.get("study")
    if not isinstance(study, dict):
        raise FormatError(
            "summary['study'] is missing or not a dict; pass the dict that "
            "the findings module computed"
        )
    rows = {name: _rows(summary, name) for name in SECTION_KEYS}
    rows["templates"] = [{"split": "test", "target": _accuracy(r)} | r for r in rows["templates"]]
    headline = headline_of(summary)
    if headline is not None:  # summary.json states the counts the page states
        summary["headline"] = headline
    return summary, _Context(summary, study, rows, set(_underpowered(study)), headline)


def _section_html(ctx: _Context, sec: Section, out: Path, written: set[str]) -> str:
    body = [f'<section id="{esc(sec.key)}"><h2>{esc(sec.title)}</h2>']
    has_rows = bool(sec.rows(ctx))
    fig = sec.build(ctx) if sec.build is not None and has_rows else None
    if fig is not None and sec.figure is not None:
        atomic_write_bytes(out / sec.figure, _png(fig))
        written.add(sec.figure)
        body.append(
            f'<figure><img src="{esc(sec.figure)}" alt="{esc(sec.title)}">'
            f"<figcaption>{esc(sec.caption(ctx))}</figcaption></figure>"
        )
    elif sec.figure is not None or not has_rows:
        body.append(f'<p class="skip">Skipped: {esc(sec.empty)}</p>')
    else:
        body.append(f"<p>{esc(sec.caption(ctx))}</p>")
    if has_rows:
        for tab in sec.tables:
            t = tab(ctx)
            body.append(f'<div class="scroll">{t}</div>' if t else _no_table(sec.key))
    body.append("</section>")
    return "\n".join(body)


def _no_table(key: str) -> str:
    if key == "cross_relation":
        return '<p class="skip">No cell shows interference by the test.</p>'
    return ""


def _headline_html(ctx: _Context) -> str:
    h = ctx.headline
    sentences = [] if h is None else headline_sentences(h, ctx.study.get("top_k"))
    if sentences:
        return "".join(f"<p>{esc(s)}</p>" for s in sentences)
    return (
        '<p class="skip">No headline: the summary holds no test verdicts (regenerate it with '
        "this version's findings module).</p>"
    )


def _page(ctx: _Context, sections: list[Section], body: list[str], title: str | None) -> str:
    study = ctx.study
    page_title = (
        title if title is not None else f"Relation neurons of {study.get('model') or 'model'}"
    )
    nav = " ".join(f'<a href="#{esc(s.key)}">{esc(s.title)}</a>' for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(page_title)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{esc(page_title)}</h1>
{_study_table(study)}
</header>
<div class="headline">{_headline_html(ctx)}</div>
<nav>{nav}</nav>
{chr(10).join(body)}
<footer><p class="skip">Numbers from summary.json next to this page.</p></footer>
</body></html>
"""


def render(summary: dict[str, Any], out: Path | str, *, title: str | None = None) -> Path:
    """Write `index.html`, `summary.json` and the figures of `summary` into `out/`; return the
    path of `index.html`. Files of the same names are replaced atomically."""
    summary, ctx = _context(summary)  # every section is checked before anything is created
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise WarehouseError(f"{out} is a file; pass a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    # summary.json first: the page's numbers are checkable even if plotting fails.
    atomic_write_bytes(
        out / "summary.json", (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode()
    )
    sections = [s for s in SECTIONS if not (s.hidden_when_empty and not s.rows(ctx))]
    written: set[str] = set()
    body = [_section_html(ctx, sec, out, written) for sec in sections]
    page = _page(ctx, sections, body, title)
    index = out / "index.html"
    atomic_write_bytes(index, page.encode("utf-8"))
    # A figure not drawn this time must not linger from an earlier render of this folder.
    # Removed after the new page is in place, so no page ever points at a removed file.
    for name in FIGURES:
        if name not in written:
            (out / name).unlink(missing_ok=True)
    return index
