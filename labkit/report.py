"""Report figures redrawn from saved metrics alone: nothing is trained or evaluated here.

Two sources, each read as JSON:

- a training run folder's ``history.json`` (written by :class:`labkit.train.Trainer`) gives the
  loss curves ``loss_<run>``;
- each ``benchmarks/results/<name>.json`` gives one figure ``bench_<name>``, chosen by what the
  file holds (so a results file a new benchmark writes is drawn when it has a known shape):

  ========================  ====================================================================
  shape of the file         figure
  ========================  ====================================================================
  ``rate_distortion``       SNR against bit rate, one line per codec, one panel per clip (atoms)
  ``quality``               log-spectral distance per test set, one bar per method, and per
                            degradation of the robustness test when there is one (diffusion_sr)
  ``songs``                 vocals SDR per held-out song: shipped, fine-tuned, oracle
                            (single_song)
  ``cases``                 peak memory per separation case (separate_memory)
  ``conditions``            a separation panel per test condition, on one scale
                            (engine_transfer: same and other engines)
  ``jobs``                  SDR against training steps, one line per job, one panel per
                            notebook, with the oracle, the course target and the CPU budget's
                            step count (step_scaling)
  a separation table        SDR per stem, one bar per method: models, oracle, baselines
                            (``tables.sdr`` / ``sdr`` as written by
                            :func:`labkit.oracles.report_data`, or ``scores`` / ``methods`` of
                            ``{method: {"sdr": {stem: dB}}}``: spec_unet, wave_unet, toy_musdb)
  ========================  ====================================================================

A file of another shape, or one that is not valid JSON, is skipped with a :class:`ReportWarning`
that names it; so is a run folder without a readable ``history.json``.

``python -m labkit.report [--results benchmarks/results] [--run RUN_DIR ...] [--out DIR]``
writes PDF and PNG through :func:`labkit.figures.save` (default folder: ``LABKIT_FIGURES_DIR``,
else ``build/figures``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.core import repo_root
from labkit.errors import LabkitError

if TYPE_CHECKING:  # matplotlib is imported only when drawing: `labkit --help` stays fast
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ReportWarning", "add_arguments", "add_report", "default_results_dir", "main",
           "regenerate", "results_figure", "run_figure", "run_report"]

#: Stems first in the course order, then anything else in the order the file lists it.
_STEM_ORDER = ("vocals", "drums", "bass", "other", "accompaniment")


class ReportWarning(UserWarning):
    """A results file or run folder was skipped: its name and the reason are in the message."""


class _Unexpected(ValueError):
    """The file does not have the structure a recipe draws (the message says what is missing)."""


def default_results_dir() -> Path:
    """``benchmarks/results`` of the labkit checkout, else of the current folder."""
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "benchmarks" / "results"


# ------------------------------------------------------------------------------ reading numbers
def _number(value: Any, where: str) -> float:
    """A finite float, NaN for a missing value (None/NaN); anything else is unexpected."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Unexpected(f"{where} is {value!r}, not a number")
    return float(value)


def _mapping(data: Any, *keys: str) -> Mapping:
    """``data[k0][k1]...`` when every level is a dict; raises _Unexpected naming the path."""
    for depth, key in enumerate(keys):
        if not isinstance(data, Mapping) or key not in data:
            raise _Unexpected(f"no {'.'.join(keys[: depth + 1])!s}")
        data = data[key]
    if not isinstance(data, Mapping):
        raise _Unexpected(f"{'.'.join(keys)} is {type(data).__name__}, not an object")
    return data


def _ordered_sources(sources: Iterable[str]) -> list[str]:
    sources = [s for s in dict.fromkeys(sources) if s != "mean"]
    known = [s for s in _STEM_ORDER if s in sources]
    return known + [s for s in sources if s not in known]


def _is_oracle(name: str) -> bool:
    return "oracle" in name.lower()


# ------------------------------------------------------------------------------ drawing helpers
def _grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    hatched: Callable[[str], bool] = _is_oracle,
    digits: int = 1,
    colours: Mapping[str, str] | None = None,
) -> None:
    """One cluster of bars per group, one bar (and colour) per series; NaN bars are left out.

    Series for which ``hatched(name)`` is true (the oracles) are hatched, so that a reader never
    mistakes a ceiling computed from the true stems for a model's score. ``colours`` keeps a
    method's colour the same across the panels of a figure (default: the palette in order).
    """
    import numpy as np

    from labkit.figures import PALETTE

    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        heights = np.asarray(values, dtype=float)
        offsets = x - 0.4 + width * (index + 0.5)
        colour = (colours or {}).get(name, PALETTE[index % len(PALETTE)])
        bars = ax.bar(offsets, np.nan_to_num(heights), width * 0.92, label=name, color=colour,
                      edgecolor="white", linewidth=0.5, hatch="///" if hatched(name) else None)
        labels = ["" if math.isnan(v) else f"{v:.{digits}f}" for v in heights]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
        for bar, value in zip(bars, heights):
            bar.set_visible(not math.isnan(value))
    ax.set_xticks(x, list(groups))
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y")
    ax.set_axisbelow(True)
    # beside the axes: below them it collides with long or rotated group labels
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _title(ax: Axes, headline: str, detail: str | None = None) -> None:
    if detail:
        headline += "\n" + textwrap.fill(detail, 90)
    ax.set_title(headline, fontsize=10, loc="left")


def _new_figure(n_panels: int = 1, width: float = 7.0, height: float = 4.0
                ) -> tuple[Figure, list[Axes]]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), layout="constrained",
                             squeeze=False)
    return fig, list(axes[0])


# ------------------------------------------------------------------------------ recipes
def _separation_scores(data: Mapping) -> tuple[list[str], dict[str, list[float]], str | None]:
    """``(sources, {method: [dB per source]}, metric)`` from any separation-table shape."""
    for path in (("tables", "sdr"), ("sdr",), ()):
        try:
            table = _mapping(data, *path) if path else data
        except _Unexpected:
            continue
        methods = table.get("methods")
        if isinstance(methods, Mapping) and methods and all(
                isinstance(m, Mapping) and isinstance(m.get("scores"), Mapping)
                for m in methods.values()):
            where = ".".join(path) or "the file"
            sources = table.get("sources")
            if not (isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
                sources = [s for m in methods.values() for s in m["scores"]]
            sources = _ordered_sources(sources)
            series = {name: [_number(m["scores"].get(s), f"{where}.methods.{name}.scores.{s}")
                             for s in sources] for name, m in methods.items()}
            return sources, series, _metric_text(data, table.get("metric"))
    for key in ("scores", "methods"):
        methods = data.get(key)
        if isinstance(methods, Mapping) and methods and all(
                isinstance(m, Mapping) and isinstance(m.get("sdr"), Mapping)
                for m in methods.values()):
            sources = _ordered_sources(s for m in methods.values() for s in m["sdr"])
            series = {name: [_number(m["sdr"].get(s), f"{key}.{name}.sdr.{s}") for s in sources]
                      for name, m in methods.items()}
            return sources, series, _metric_text(data, None)
    raise _Unexpected("no separation table (tables.sdr, sdr.methods, scores.*.sdr or "
                      "methods.*.sdr)")


def _metric_text(data: Mapping, table_metric: Any) -> str | None:
    """Which SDR the numbers are (the convention matters: museval and whole-signal SDR differ
    by about 2 dB): the file's description of it, else the table's own metric name."""
    metrics = data.get("metrics")
    candidates = [metrics.get("sdr") if isinstance(metrics, Mapping) else None,
                  data.get("metric"), table_metric]
    return next((c for c in candidates if isinstance(c, str) and c), None)


def _draw_separation(data: Mapping, name: str) -> Figure:
    sources, series, metric = _separation_scores(data)
    if not sources or all(math.isnan(v) for values in series.values() for v in values):
        raise _Unexpected("its separation table holds no scores")
    fig, (ax,) = _new_figure(width=max(6.0, 1.1 + 0.45 * len(sources) * len(series)))
    _grouped_bars(ax, sources, series, "SDR (dB)")
    _title(ax, f"{name}: SDR per stem (hatched: oracle)", metric)
    return fig


def _draw_conditions(data: Mapping, name: str) -> Figure:
    """One separation panel per test condition (engine_transfer: same and other engines)."""
    from labkit.figures import PALETTE

    conditions = _mapping(data, "conditions")
    panels = {}
    for condition, value in conditions.items():
        if not isinstance(value, Mapping):
            raise _Unexpected(f"conditions.{condition} is {type(value).__name__}, not an object")
        try:
            panels[str(condition)] = _separation_scores(value)
        except _Unexpected as exc:
            raise _Unexpected(f"conditions.{condition}: {exc}") from None
    if not panels:
        raise _Unexpected("conditions is empty")
    names = list(dict.fromkeys(m for _, series, _ in panels.values() for m in series))
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(names)}
    width = max(4.5, 1.1 + 0.45 * max(len(s) * len(v) for s, v, _ in panels.values()))
    fig, axes = _new_figure(len(panels), width=width)
    for ax, (condition, (sources, series, _)) in zip(axes, panels.items()):
        _grouped_bars(ax, sources, series, "SDR (dB)", colours=colours)
        _title(ax, f"{name}: {condition}")
    for ax in axes[1:]:  # the panels compare conditions: one scale for all of them
        ax.sharey(axes[0])
    for ax in axes[:-1]:
        ax.get_legend().remove()
    metric = _metric_text(data, None)
    if metric:
        fig.suptitle(f"SDR per stem (hatched: oracle): {metric}", fontsize=9, x=0.01,
                     ha="left")
    return fig


def _draw_single_song(data: Mapping, name: str) -> Figure:
    songs = data.get("songs")
    if not isinstance(songs, list) or not songs or not all(isinstance(r, Mapping) for r in songs):
        raise _Unexpected("no list of per-song rows under 'songs'")
    columns = {"shipped": "shipped_db", "fine-tuned": "finetuned_db", "IRM2 oracle": "oracle_db"}
    rows = list(songs)
    if isinstance(data.get("median"), Mapping):
        rows.append({"song": "median", **data["median"]})
    groups = [str(r.get("song", f"song {i}")) for i, r in enumerate(rows)]
    series = {label: [_number(r.get(key), f"songs[{i}].{key}") for i, r in enumerate(rows)]
              for label, key in columns.items()}
    if all(math.isnan(v) for values in series.values() for v in values):
        raise _Unexpected("its songs hold none of shipped_db, finetuned_db, oracle_db")
    fig, (ax,) = _new_figure(width=max(6.0, 1.0 + 1.3 * len(groups)))
    _grouped_bars(ax, groups, series, "vocals SDR on the held-out part (dB)")
    metric = data.get("metric")
    _title(ax, f"{name}: single-song fine-tuning (hatched: oracle)",
           metric if isinstance(metric, str) else None)
    ax.tick_params(axis="x", labelsize=8)
    return fig


def _draw_rate_distortion(data: Mapping, name: str) -> Figure:
    from labkit.figures import PALETTE

    clips = _mapping(data, "rate_distortion")
    if not clips:
        raise _Unexpected("rate_distortion is empty")
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for clip, entries in clips.items():
        if not isinstance(entries, list):
            raise _Unexpected(f"rate_distortion.{clip} is {type(entries).__name__}, not a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("method"), str):
                raise _Unexpected(f"rate_distortion.{clip}[{i}] has no 'method'")
            where = f"rate_distortion.{clip}[{i}]"
            point = (_number(entry.get("kbps"), f"{where}.kbps"),
                     _number(entry.get("snr"), f"{where}.snr"))
            if not any(math.isnan(v) for v in point):
                curves.setdefault(str(clip), {}).setdefault(entry["method"], []).append(point)
    if not curves:
        raise _Unexpected("rate_distortion holds no (kbps, snr) points")
    methods = list(dict.fromkeys(m for per_clip in curves.values() for m in per_clip))
    fig, axes = _new_figure(len(curves), width=5.0, height=3.8)
    for ax, (clip, per_method) in zip(axes, curves.items()):
        for method, points in per_method.items():
            points.sort()
            colour = PALETTE[methods.index(method) % len(PALETTE)]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=4, lw=1.4,
                    color=colour, label=method, ls="-" if method == "atoms" else "--")
        ax.set_xlabel("bit rate (kbit/s, from the bytes written)")
        ax.set_ylabel("SNR (dB)")
        ax.grid(True)
        _title(ax, f"{name}: {clip}")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def _draw_lsd(data: Mapping, name: str) -> Figure:
    quality = _mapping(data, "quality")
    sets = {key: value["mean"] for key, value in quality.items()
            if isinstance(value, Mapping) and isinstance(value.get("mean"), Mapping)}
    if not sets:
        raise _Unexpected("quality has no test set with a 'mean' of scores per method")
    methods = list(dict.fromkeys(m for means in sets.values() for m in means))

    def lsd(scores: Any, where: str) -> float:
        return _number(scores.get("lsd"), where) if isinstance(scores, Mapping) else math.nan

    series = {m: [lsd(means.get(m), f"quality.{s}.mean.{m}.lsd") for s, means in sets.items()]
              for m in methods}
    from labkit.figures import PALETTE

    robustness = quality.get("robustness")
    robust = isinstance(robustness, Mapping) and bool(robustness) and all(
        isinstance(v, Mapping) for v in robustness.values())
    kinds = list(dict.fromkeys(k for v in robustness.values() for k in v)) if robust else []
    names = list(dict.fromkeys([*methods, *kinds]))
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    fig, axes = _new_figure(2 if robust else 1, width=5.5, height=3.8)
    _grouped_bars(axes[0], list(sets), series, "LSD (dB, lower is better)", digits=2,
                  colours=colours)
    settings = quality.get("settings")
    case = settings.get("case") if isinstance(settings, Mapping) else None
    _title(axes[0], f"{name}: log-spectral distance",
           f"band-limited input: {case}" if isinstance(case, str) else None)
    if robust:
        cases = list(robustness)
        series = {k: [lsd(robustness[c].get(k), f"quality.robustness.{c}.{k}.lsd")
                      for c in cases] for k in kinds}
        _grouped_bars(axes[1], cases, series, "LSD (dB, lower is better)", digits=2,
                      colours=colours)
        axes[1].tick_params(axis="x", labelsize=8, rotation=20)
        _title(axes[1], f"{name}: other low-pass filters and codecs")
    return fig


def _draw_memory(data: Mapping, name: str) -> Figure:
    cases = data.get("cases")
    if not isinstance(cases, list) or not cases or not all(isinstance(c, Mapping) for c in cases):
        raise _Unexpected("no list of cases under 'cases'")
    groups = [f"{c.get('function', '?')}\n{c.get('seconds', '?')} s" for c in cases]
    series = {label: [_number(c.get(key), f"cases[{i}].{key}") for i, c in enumerate(cases)]
              for label, key in (("peak RSS", "peak_rss_mb"), ("working set", "working_mb"))}
    if all(math.isnan(v) for values in series.values() for v in values):
        raise _Unexpected("its cases hold neither peak_rss_mb nor working_mb")
    fig, (ax,) = _new_figure(width=max(6.0, 1.5 * len(groups)))
    _grouped_bars(ax, groups, series, "memory (MB)", hatched=lambda _: False, digits=0)
    _title(ax, f"{name}: memory of separation", data.get("method") if isinstance(
        data.get("method"), str) else None)
    return fig


_PART_TITLES = {"spec": "notebook 02: vocals SDR (dB)", "wave": "notebook 03: mean 4-stem SDR (dB)"}


def _draw_step_scaling(data: Mapping, name: str) -> Figure:
    from matplotlib.ticker import FuncFormatter

    from labkit.figures import PALETTE

    jobs = _mapping(data, "jobs")
    by_part: dict[str, dict[str, Mapping]] = {}
    for job, record in jobs.items():
        if not isinstance(record, Mapping) or not isinstance(record.get("points"), list):
            raise _Unexpected(f"jobs.{job} has no list of points")
        by_part.setdefault(str(record.get("part", "?")), {})[str(job)] = record
    if not by_part:
        raise _Unexpected("jobs is empty")
    targets = data.get("targets") if isinstance(data.get("targets"), Mapping) else {}
    budget = data.get("cpu_budget_steps") if isinstance(data.get("cpu_budget_steps"),
                                                        Mapping) else {}
    fig, axes = _new_figure(len(by_part), width=5.5, height=5.0)
    for ax, (part, records) in zip(axes, by_part.items()):
        oracle, ticks = math.nan, set()
        for i, (job, record) in enumerate(records.items()):
            points = sorted((_number(p.get("step"), f"jobs.{job}.points[].step"),
                             _number(p.get("headline"), f"jobs.{job}.points[].headline"))
                            for p in record["points"] if isinstance(p, Mapping))
            if not points:
                continue
            ticks.update(p[0] for p in points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=4, lw=1.4,
                    color=PALETTE[i % len(PALETTE)], label=job)
            oracle = _number(record.get("oracle_headline"), f"jobs.{job}.oracle_headline")
        if not math.isnan(oracle):
            ax.axhline(oracle, color="0.3", lw=1.0, label=f"IRM2 oracle ({oracle:.2f})")
            share = targets.get(part)
            if isinstance(share, (int, float)):
                ax.axhline(share * oracle, color="0.3", lw=1.0, ls="--",
                           label=f"course target ({share:g}x oracle)")
        steps = budget.get(part, {}).get("steps") if isinstance(budget.get(part), Mapping) \
            else None
        if isinstance(steps, (int, float)):
            ax.axvline(steps, color="0.5", lw=1.0, ls=":", label=f"CPU budget ({steps:.0f} steps)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.0f}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _pos: ""))
        ax.set_xlabel("training steps")
        ax.set_ylabel("SDR (dB)")
        ax.grid(True)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        _title(ax, f"{name}: {_PART_TITLES.get(part, part)}",
               data.get("device") if isinstance(data.get("device"), str) else None)
    return fig


#: (key that marks the shape, recipe), tried in this order; the separation table comes last
#: because several other shapes also carry a table of some kind.
_RECIPES: list[tuple[str | None, Callable[[Mapping, str], Figure]]] = [
    ("rate_distortion", _draw_rate_distortion),
    ("quality", _draw_lsd),
    ("songs", _draw_single_song),
    ("cases", _draw_memory),
    ("conditions", _draw_conditions),
    ("jobs", _draw_step_scaling),
    (None, _draw_separation),
]


# ------------------------------------------------------------------------------ public API
def results_figure(path: str | os.PathLike) -> Figure:
    """The figure of one benchmark results file (see the module docstring for the shapes).

    Raises LabkitError naming the file when it cannot be read or has none of the known shapes.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabkitError(f"{path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(data, Mapping):
        raise LabkitError(f"{path}: holds a {type(data).__name__}, expected a JSON object")
    import matplotlib.pyplot as plt

    from labkit.figures import style

    reasons = []
    for key, recipe in _RECIPES:
        if key is not None and key not in data:
            continue
        before = set(plt.get_fignums())
        with style():
            try:
                return recipe(data, path.stem)
            except (_Unexpected, AttributeError, IndexError, KeyError, TypeError,
                    ValueError) as exc:
                # a recipe that fails half-way must not leave its figure open
                for number in set(plt.get_fignums()) - before:
                    plt.close(number)
                reasons.append(f"{recipe.__name__.removeprefix('_draw_')}: {exc}")
    raise LabkitError(
        f"{path}: no figure recipe fits its structure ({'; '.join(reasons)}); expected one of "
        "rate_distortion, quality, songs, cases, conditions, jobs, or a separation table (tables.sdr, "
        "sdr.methods, scores.*.sdr, methods.*.sdr)")


def run_figure(run: str | os.PathLike, title: str | None = None) -> Figure:
    """The loss curves of a training run: a run folder or its ``history.json``.

    Raises LabkitError naming the file when it is missing, unreadable or holds no loss values.
    """
    from labkit.figures import history_series, loss_curves

    path = Path(run)
    path = path / "history.json" if path.is_dir() else path
    if not path.is_file():
        raise LabkitError(f"{path}: no such history; pass a run folder holding history.json "
                          "(written by labkit.train.Trainer) or the file itself")
    series = history_series(path)
    keys = [k for k in series if "loss" in k]
    if not keys:
        raise LabkitError(f"{path}: holds no loss values (its numeric series: {sorted(series)})")
    longest = max(len(series[k][1]) for k in keys)
    # a long, noisy training loss reads better as a moving average over a faint raw curve
    smooth = longest // 25 if longest >= 100 else 0
    fig, _ = loss_curves(path, keys=keys, smooth=smooth,
                         title=title or f"{path.parent.name}: training and validation loss")
    return fig


def _histories(run: Path) -> list[Path]:
    """The history files of ``run``: the file itself, the folder's, or every one below it."""
    if run.is_file() or (run / "history.json").is_file():
        return [run]
    return sorted(run.rglob("history.json")) if run.is_dir() else []


def _figure_names(histories: Sequence[Path]) -> list[str]:
    """``loss_<run folder>``, with the parent folder added when two runs share a name."""
    folders = [h.parent if h.is_file() else h for h in histories]
    names = [f.name for f in folders]
    return [f"loss_{f.parent.name}_{f.name}" if names.count(f.name) > 1 else f"loss_{f.name}"
            for f in folders]


def regenerate(
    results_dir: str | os.PathLike | None = "auto",
    runs: Iterable[str | os.PathLike] = (),
    out: str | os.PathLike | None = None,
) -> list[Path]:
    """Redraw the report figures from saved metrics; returns the written files (PDF and PNG).

    ``results_dir``: a folder of benchmark results (``*.json``), each drawn as ``bench_<name>``;
    ``"auto"`` (default) is :func:`default_results_dir` when it exists, ``None`` skips results.
    ``runs``: training run folders (or their ``history.json``, or folders holding several runs),
    each drawn as ``loss_<run>``. ``out``: the folder to write to (default:
    :func:`labkit.figures.figures_dir`). Files that cannot be drawn are skipped with a
    :class:`ReportWarning` naming them. Raises LabkitError when an explicit ``results_dir`` is
    not a folder.
    """
    import matplotlib.pyplot as plt

    from labkit.figures import save

    jobs: list[tuple[str, Callable[[], Figure], Path]] = []
    if results_dir == "auto":
        results_dir = default_results_dir()
        results_dir = results_dir if results_dir.is_dir() else None
    if results_dir is not None:
        results_dir = Path(results_dir)
        if not results_dir.is_dir():
            raise LabkitError(f"results_dir={str(results_dir)!r} is not a folder; pass the folder "
                              "that holds the benchmarks' *.json (benchmarks/results) or None")
        for path in sorted(results_dir.glob("*.json")):
            jobs.append((f"bench_{path.stem}", lambda p=path: results_figure(p), path))
    histories: list[Path] = []
    for run in runs:
        found = _histories(Path(run))
        if not found:
            warnings.warn(f"{run}: skipped, no history.json there (a run folder of "
                          "labkit.train.Trainer holds one)", ReportWarning, stacklevel=2)
        histories += found
    for name, history in zip(_figure_names(histories), histories):
        jobs.append((name, lambda h=history: run_figure(h), history))

    written: list[Path] = []
    for name, draw, source in jobs:
        try:
            fig = draw()
        except LabkitError as exc:
            reason = str(exc).removeprefix(f"{source}: ")
            warnings.warn(f"skipped {source}: {reason}", ReportWarning, stacklevel=2)
            continue
        try:
            written += save(fig, name, folder=out)
        finally:
            plt.close(fig)
    return written


# ------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m labkit.report`` and ``labkit report``."""
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="folder of benchmark results *.json (default: the checkout's "
                             "benchmarks/results, when there is one)")
    parser.add_argument("--no-results", action="store_true",
                        help="draw only the runs' loss curves")
    parser.add_argument("--run", type=Path, action="append", default=[], metavar="RUN_DIR",
                        help="training run folder (its history.json), or a folder of runs; "
                             "repeatable")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write PDF and PNG (default: $LABKIT_FIGURES_DIR, else "
                             "build/figures)")


def run_report(args: argparse.Namespace) -> int:
    """Redraw the figures the parsed ``args`` ask for; print what was written."""
    import matplotlib

    matplotlib.use("Agg")  # a command only saves files: no window, no display needed
    results = None if args.no_results else (args.results or "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("always", ReportWarning)
        warnings.showwarning = _print_warning
        written = regenerate(results, runs=args.run, out=args.out)
    for path in written:
        print(path)
    print(f"[report] {len(written) // 2} figures, {len(written)} files", file=sys.stderr)
    return 0


def _print_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"[report] warning: {message}", file=sys.stderr)


def add_report(subparsers: argparse._SubParsersAction) -> None:
    """``labkit report [--results DIR] [--run RUN_DIR ...] [--out DIR]``: figures from saved
    metrics (registered in :data:`labkit.cli.SUBCOMMANDS`)."""
    p = subparsers.add_parser(
        "report", help="redraw report figures from saved metrics (no training)",
        description="Redraw the loss curves of training runs and one figure per benchmark "
                    "results file, from the saved JSON alone.")
    add_arguments(p)
    p.set_defaults(func=run_report)


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.report``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m labkit.report",
                                     description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_report(args)
    except LabkitError as err:
        print(f"labkit report: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
