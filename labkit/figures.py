"""Figures for the notebooks and the reports: waveforms, spectrograms, masks, loss curves.

Every plotting helper follows one habit: it takes ``ax=None``, creates a figure only when no axes
are given, draws, and returns ``(fig, ax)`` (multi-panel helpers return ``(fig, axes)``). None of
them calls ``plt.show()`` or changes matplotlib's global settings: the course style is applied
through a style context (:func:`style`) around each drawing, so your own plots stay as you set them.
Inputs may be NumPy arrays or torch tensors (on any device, with or without gradients).

:func:`save` writes a figure as PDF and PNG for reports, into ``LABKIT_FIGURES_DIR`` (set by
``python -m labkit.course``) or ``build/figures`` of the checkout.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from labkit.core import repo_root
from labkit.errors import AudioError, LabkitError

__all__ = [
    "PALETTE", "STYLE", "compare_spectrograms", "figure_stem", "figures_dir", "history_series",
    "loss_curves", "mask", "save", "share_color_scale", "spectrogram", "style", "waveform",
]

#: Okabe-Ito: distinguishable with every common colour-vision deficiency, and in greyscale print.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

#: The course style, applied with :func:`style` around every helper's drawing (never globally).
STYLE: dict[str, Any] = {
    "axes.prop_cycle": plt.cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "grid.alpha": 0.3,
    "image.cmap": "magma",
    "figure.dpi": 100,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays selectable and editable
}

#: The largest number of channels a 2-D array may have and still count as a waveform.
MAX_CHANNELS = 8


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply the course style (:data:`STYLE`) inside a ``with`` block, e.g. to your own plots.

    Only the keys of :data:`STYLE` are set and restored. ``plt.rc_context`` restores *every*
    setting instead, and when a notebook's first figure is made inside it, that undoes the
    interactive mode the inline backend switches on: no later figure would show.
    """
    saved = {key: plt.rcParams[key] for key in STYLE}
    try:
        plt.rcParams.update(STYLE)
        yield
    finally:
        plt.rcParams.update(saved)


# ----------------------------------------------------------------------------------- inputs
def _to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of a NumPy array, a torch tensor (any device, dtype, grad) or a sequence."""
    if hasattr(x, "detach"):  # torch without importing torch
        x = x.detach().cpu()
        x = x if x.is_complex() else x.float()
        return x.numpy()
    return np.asarray(x)


def _check_sr(sr: float) -> float:
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.number)) or not sr > 0:
        raise LabkitError(f"sr={sr!r}: the sample rate must be a positive number of Hz")
    return float(sr)


def _as_channels(audio: Any, what: str = "audio") -> np.ndarray:
    """Audio ``(samples,)``, ``(channels, samples)`` or ``(1, channels, samples)`` as float
    ``(channels, samples)``; raises AudioError on anything else."""
    arr = _to_numpy(audio)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise AudioError(
            f"{what} has shape {tuple(_to_numpy(audio).shape)}: expected (samples,) or "
            "(channels, samples)"
        )
    if arr.shape[0] > MAX_CHANNELS and arr.shape[1] <= MAX_CHANNELS:
        raise AudioError(
            f"{what} has shape {tuple(arr.shape)}, which looks channels-last: labkit audio is "
            "channels-first (channels, samples); pass audio.T"
        )
    if arr.shape[1] == 0:
        raise AudioError(f"{what} has shape {tuple(arr.shape)}: it holds no samples")
    if np.iscomplexobj(arr):
        raise AudioError(f"{what} is complex: expected real samples")
    return arr.astype(np.float64, copy=False)


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _hz_label(value: float, _pos: int | None = None) -> str:
    """Tick label in Hz: 500, 1k, 2.5k, 16k."""
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


# ----------------------------------------------------------------------------------- waveform
def _envelope(samples: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of a min/max envelope of ``samples`` (channels, n) with about
    ``max_points`` points per channel: it looks like the full plot but draws far faster."""
    n = samples.shape[-1]
    blocks = max(1, max_points // 2)
    size = math.ceil(n / blocks)
    padded_len = size * math.ceil(n / size)
    padded = np.pad(samples, ((0, 0), (0, padded_len - n)), mode="edge")
    frames = padded.reshape(samples.shape[0], -1, size)
    lo, hi = frames.min(axis=-1), frames.max(axis=-1)
    values = np.stack([lo, hi], axis=-1).reshape(samples.shape[0], -1)
    starts = np.arange(frames.shape[1]) * size
    index = np.stack([starts, np.minimum(starts + size - 1, n - 1)], axis=-1).reshape(-1)
    return index, values


def waveform(
    audio: Any,
    sr: float,
    ax: Axes | None = None,
    title: str | None = None,
    label: str | None = None,
    alpha: float = 0.8,
    color: str | None = None,
    max_points: int = 20_000,
    figsize: tuple[float, float] = (8.0, 2.5),
) -> tuple[Figure, Axes]:
    """Plot ``audio`` (samples,) or (channels, samples) against time in seconds.

    Channels are overlaid (stereo labelled L and R). Signals longer than ``max_points`` samples
    are drawn as their min/max envelope, which looks the same and draws in a fraction of the time.
    ``label`` names the signal in the legend (call again on the same ``ax`` to overlay another).
    Returns ``(fig, ax)``.
    """
    sr = _check_sr(sr)
    samples = _as_channels(audio)
    channels, n = samples.shape
    with style():
        fig, ax = _new_axes(ax, figsize)
        if n > max_points:
            index, values = _envelope(samples, max_points)
        else:
            index, values = np.arange(n), samples
        times = index / sr
        names = ["L", "R"] if channels == 2 else [f"ch {c}" for c in range(channels)]
        for c in range(channels):
            if channels == 1:
                line_label = label
            else:
                line_label = f"{label} {names[c]}" if label else names[c]
            ax.plot(times, values[c], lw=0.8, alpha=alpha, label=line_label,
                    color=color if channels == 1 else None)
        ax.set_xlim(0, n / sr)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("amplitude")
        if title:
            ax.set_title(title)
        if label or channels > 1:
            ax.legend(loc="upper right")
    return fig, ax


# -------------------------------------------------------------------------------- spectrogram
def _is_waveform(arr: np.ndarray, is_magnitude: bool | None) -> bool:
    if is_magnitude is not None:
        return not is_magnitude
    if np.iscomplexobj(arr):
        return False
    squeezed = arr
    while squeezed.ndim > 2 and squeezed.shape[0] == 1:
        squeezed = squeezed[0]
    return squeezed.ndim == 1 or (squeezed.ndim == 2 and squeezed.shape[0] <= MAX_CHANNELS)


def _bin_edges(centres: np.ndarray, low: float = 0.0) -> np.ndarray:
    """Edges around bin ``centres`` (midpoints), the outer ones extrapolated, clipped at ``low``."""
    if len(centres) == 1:
        return np.array([max(low, centres[0] - 0.5), centres[0] + 0.5])
    mids = (centres[1:] + centres[:-1]) / 2
    first = centres[0] - (centres[1] - centres[0]) / 2
    last = centres[-1] + (centres[-1] - centres[-2]) / 2
    return np.concatenate([[max(low, first)], mids, [last]])


def _spectrogram_db(
    x: Any, sr: float, n_fft: int, hop_length: int, db_range: float,
    is_magnitude: bool | None, is_db: bool, channel: int | None,
) -> tuple[np.ndarray, bool]:
    """The (bins, frames) dB image of a waveform or magnitude, and whether x was a waveform."""
    arr = _to_numpy(x)
    if _is_waveform(arr, is_magnitude):
        import torch

        from labkit.spectral import amplitude_to_db, stft

        samples = _as_channels(arr)
        mono = samples.mean(axis=0) if channel is None else samples[channel]
        if mono.shape[-1] <= n_fft:  # centred STFT needs more than n_fft // 2 samples to pad
            mono = np.pad(mono, (0, n_fft + 1 - mono.shape[-1]))
        spec = stft(torch.from_numpy(mono.astype(np.float32)), n_fft=n_fft, hop_length=hop_length)
        db = amplitude_to_db(spec.abs(), top_db=db_range)
        return _to_numpy(db).astype(np.float64), True
    mag = arr
    while mag.ndim > 2 and mag.shape[0] == 1:
        mag = mag[0]
    if mag.ndim == 3:
        mag = np.abs(mag)
        mag = mag.mean(axis=0) if channel is None else mag[channel]
    if mag.ndim != 2:
        raise LabkitError(
            f"spectrogram input has shape {tuple(arr.shape)}: expected a waveform (samples,) or "
            "(channels, samples), or a magnitude (bins, frames) or (channels, bins, frames)"
        )
    if is_db:
        return np.asarray(mag, dtype=np.float64), False
    import torch

    from labkit.spectral import amplitude_to_db

    db = amplitude_to_db(torch.from_numpy(np.abs(mag).astype(np.float32)), top_db=db_range)
    return _to_numpy(db).astype(np.float64), False


def _frequency_axis(ax: Axes, y_axis: str, edges: np.ndarray, top: float) -> None:
    candidates = np.array([20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000.0])
    if y_axis == "linear":
        ax.set_ylim(edges[0], top)
    elif y_axis == "log":
        ax.set_yscale("log")
        # below 20 Hz (or the first bin) a log axis spends its height on a few meaningless bins
        ax.set_ylim(min(max(20.0, edges[1]), top / 2), top)
        ax.yaxis.set_major_locator(ticker.FixedLocator(candidates))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
    else:  # mel: the Slaney warping of labkit.spectral.mel_filterbank (librosa's default)
        from labkit.spectral import hz_to_mel, mel_to_hz

        def forward(f: np.ndarray) -> np.ndarray:
            return hz_to_mel(np.maximum(np.asarray(f, dtype=np.float64), 0.0))

        def inverse(m: np.ndarray) -> np.ndarray:
            return mel_to_hz(np.asarray(m, dtype=np.float64))

        ax.set_yscale("function", functions=(forward, inverse))
        ax.set_ylim(edges[0], top)
        ticks = np.concatenate([[0, 250, 500], candidates[candidates >= 1000]])
        ax.yaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_hz_label))


def spectrogram(
    x: Any,
    sr: float,
    ax: Axes | None = None,
    title: str | None = None,
    n_fft: int = 1024,
    hop_length: int = 256,
    y_axis: str = "linear",
    db_range: float = 80.0,
    colorbar: bool = True,
    is_magnitude: bool | None = None,
    is_db: bool = False,
    channel: int | None = None,
    frequencies: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "magma",
    max_frames: int = 2000,
    figsize: tuple[float, float] = (8.0, 3.2),
) -> tuple[Figure, Axes]:
    """Show the dB magnitude spectrogram of a waveform, or of a magnitude you computed, in s and Hz.

    What ``x`` is (unless ``is_magnitude`` says so): complex arrays are STFTs; real 1-D arrays
    and real 2-D arrays with at most 8 rows are waveforms ``(samples,)`` / ``(channels,
    samples)``; other real 2-D arrays are magnitudes ``(bins, frames)``; 3-D arrays are magnitudes
    ``(channels, bins, frames)``; with ``frequencies`` given, ``x`` is a magnitude. Leading
    dimensions of size 1 (a batch of one) are dropped.

    A waveform goes through :func:`labkit.spectral.stft` (``n_fft``, ``hop_length``, Hann window,
    centred frames) and :func:`labkit.spectral.amplitude_to_db`; a magnitude through
    ``amplitude_to_db`` unless ``is_db``. Several channels are averaged (the mono mix of a
    waveform) unless ``channel`` picks one. Frames are placed at ``frame * hop_length / sr``
    seconds; bins at ``k * sr / n_fft`` Hz, or at ``frequencies`` (their centres in Hz, e.g. of
    mel bands) when given.

    ``y_axis`` scales the frequency axis: "linear", "log" or "mel" (the image data stays the
    same; only its axis is warped). The colours span ``[vmax - db_range, vmax]`` dB with ``vmax``
    the image's maximum unless given. More than ``max_frames`` frames (a long recording) are
    shown as the maximum over groups of neighbouring frames, about as many as a figure has pixels
    across: drawing stays fast and transients stay visible (0 turns this off). Returns ``(fig, ax)``; the image is
    ``ax.collections[0]`` (its array holds the dB values drawn).
    """
    if y_axis not in ("linear", "log", "mel"):
        raise LabkitError(f"y_axis={y_axis!r}: use 'linear', 'log' or 'mel'")
    sr = _check_sr(sr)
    if is_magnitude is None and frequencies is not None:
        is_magnitude = True
    db, _ = _spectrogram_db(x, sr, n_fft, hop_length, db_range, is_magnitude, is_db, channel)
    bins, frames = db.shape
    if frequencies is None:
        centres = np.linspace(0.0, sr / 2, bins)
        freq_edges = _bin_edges(centres, low=0.0)
        freq_edges[-1] = sr / 2  # the Nyquist bin is only half a bin wide
    else:
        centres = np.asarray(_to_numpy(frequencies), dtype=np.float64)
        if centres.shape != (bins,):
            raise LabkitError(
                f"frequencies has shape {centres.shape}: expected one centre per bin, ({bins},)"
            )
        freq_edges = _bin_edges(centres, low=0.0)
    if y_axis == "log":  # log axes cannot show 0 Hz: the DC bin starts at half the next edge
        freq_edges[0] = freq_edges[1] / 2 if freq_edges[0] <= 0 else freq_edges[0]
    time_edges = (np.arange(frames + 1) - 0.5) * hop_length / sr
    if frames > max_frames > 0:
        group = math.ceil(frames / max_frames)
        padded = np.pad(db, ((0, 0), (0, -frames % group)), constant_values=-np.inf)
        db = padded.reshape(bins, -1, group).max(axis=-1)
        time_edges = np.append(time_edges[::group], time_edges[-1])[: db.shape[1] + 1]
    time_edges[0] = max(time_edges[0], 0.0)
    top = vmax if vmax is not None else float(np.nanmax(db))
    bottom = vmin if vmin is not None else top - db_range
    with style():
        fig, ax = _new_axes(ax, figsize)
        # pcolormesh (not imshow) so that log and mel axes warp the image correctly;
        # rasterized keeps PDFs small.
        image = ax.pcolormesh(time_edges, freq_edges, db, shading="flat", cmap=cmap,
                              vmin=bottom, vmax=top, rasterized=True)
        ax.set_xlim(time_edges[0], time_edges[-1])
        _frequency_axis(ax, y_axis, freq_edges, freq_edges[-1])
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz)")
        if title:
            ax.set_title(title)
        if colorbar:
            fig.colorbar(image, ax=ax, label="dB", pad=0.01)
    return fig, ax


def share_color_scale(axes: Sequence[Axes] | np.ndarray, db_range: float = 80.0) -> tuple[float, float]:
    """Give the spectrogram images on ``axes`` one colour scale: ``[max - db_range, max]`` dB with
    ``max`` the loudest value of them all (so quieter signals look quieter). Returns (vmin, vmax).
    """
    images = [coll for ax in np.ravel(axes) for coll in ax.collections if coll.get_array() is not None]
    if not images:
        raise LabkitError("share_color_scale: none of the axes holds a spectrogram image")
    top = max(float(np.nanmax(image.get_array())) for image in images)
    for image in images:
        image.set_clim(top - db_range, top)
    return top - db_range, top


def compare_spectrograms(
    signals: Mapping[str, Any],
    sr: float,
    ncols: int | None = None,
    db_range: float = 80.0,
    colorbar: bool = True,
    panel_size: tuple[float, float] = (4.2, 3.0),
    **spectrogram_kwargs: Any,
) -> tuple[Figure, np.ndarray]:
    """Spectrograms of several ``signals`` ({title: waveform or magnitude}) side by side on one
    colour scale, e.g. ``{"mixture": mix, "estimate": est, "reference": ref}``.

    ``ncols`` defaults to all in one row up to 4 signals, else 3 per row. Other keyword arguments
    go to :func:`spectrogram`. Returns ``(fig, axes)`` with ``axes`` a flat array, one per signal.
    """
    if not signals:
        raise LabkitError("compare_spectrograms: signals is empty; pass {title: audio, ...}")
    count = len(signals)
    ncols = ncols or (count if count <= 4 else 3)
    nrows = math.ceil(count / ncols)
    with style():
        fig, grid = plt.subplots(
            nrows, ncols, squeeze=False, sharex=True, sharey=True, layout="constrained",
            figsize=(panel_size[0] * ncols + (0.8 if colorbar else 0), panel_size[1] * nrows),
        )
        axes = grid.ravel()
        for ax, (name, x) in zip(axes, signals.items()):
            spectrogram(x, sr, ax=ax, title=str(name), colorbar=False, db_range=db_range,
                        **spectrogram_kwargs)
        for ax in axes[count:]:
            ax.set_visible(False)
        axes = axes[:count]
        for ax in grid[:, 1:].ravel():
            ax.set_ylabel("")
        for ax in grid[:-1, :].ravel():
            ax.set_xlabel("")
        vmin, vmax = (spectrogram_kwargs.get("vmin"), spectrogram_kwargs.get("vmax"))
        if vmin is None and vmax is None:
            share_color_scale(axes, db_range)
        if colorbar:
            fig.colorbar(axes[0].collections[0], ax=list(axes), label="dB", pad=0.01)
    return fig, axes


# --------------------------------------------------------------------------------------- mask
def mask(
    mask: Any,
    sr: float,
    hop_length: int = 256,
    ax: Axes | None = None,
    title: str | None = None,
    y_axis: str = "linear",
    colorbar: bool = True,
    channel: int = 0,
    cmap: str = "viridis",
    figsize: tuple[float, float] = (8.0, 3.2),
) -> tuple[Figure, Axes]:
    """Show a time-frequency mask (bins, frames) with values in [0, 1] (0 = silenced, 1 = kept).

    Also accepts (channels, bins, frames) (showing ``channel``) and leading batch dimensions of 1.
    Bins span 0 to sr/2 Hz, frames are ``hop_length`` samples apart. Values outside [0, 1] are
    shown at the ends of the colour scale. Returns ``(fig, ax)``; the image is
    ``ax.collections[0]``.
    """
    arr = _to_numpy(mask)
    original_shape = tuple(arr.shape)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3:
        arr = arr[channel]
    if arr.ndim != 2 or np.iscomplexobj(arr):
        raise LabkitError(
            f"mask has shape {original_shape}: expected real (bins, frames) or "
            "(channels, bins, frames)"
        )
    fig, ax = spectrogram(
        arr.astype(np.float64), sr, ax=ax, title=title, n_fft=2 * (arr.shape[0] - 1),
        hop_length=hop_length, y_axis=y_axis, colorbar=False, is_magnitude=True, is_db=True,
        vmin=0.0, vmax=1.0, cmap=cmap, figsize=figsize,
    )
    if colorbar:
        with style():
            fig.colorbar(ax.collections[0], ax=ax, label="mask", pad=0.01)
    return fig, ax


# -------------------------------------------------------------------------------- loss curves
_STEP_KEYS = ("step", "steps", "epoch", "epochs", "iteration", "time", "seconds", "wall_time")


def _is_step_key(key: str) -> bool:
    return key in _STEP_KEYS or key.endswith(("_step", "_steps", "_epoch", "_time"))


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _load_history(history: Any) -> Any:
    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if path.is_dir():
            path = path / "history.json"
        if not path.is_file():
            raise LabkitError(f"loss_curves: {path} does not exist; pass a history.json or a dict")
        try:
            history = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise LabkitError(f"loss_curves: {path} is not valid JSON ({exc})") from exc
    for attribute in ("to_dict", "as_dict"):
        if not isinstance(history, Mapping) and callable(getattr(history, attribute, None)):
            history = getattr(history, attribute)()
    if not isinstance(history, (Mapping, list)) and hasattr(history, "history"):
        history = history.history
    if isinstance(history, Mapping) and "history" in history and len(history) <= 3:
        history = history["history"]  # a file that wraps the history with metadata
    return history


def history_series(history: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every numeric series of a training history as ``{name: (steps, values)}``.

    Accepted forms (the first is what :mod:`labkit.train` saves):

    - a dict of lists, e.g. ``{"step": [...], "train_loss": [...], "val_step": [...],
      "val_loss": [...]}``: a series ``val_loss`` takes its x values from ``val_loss_step``,
      else ``val_step``, else ``step`` (when the lengths match), else 0, 1, 2...;
    - a dict of ``(step, value)`` pairs, e.g. ``{"train_loss": [(1, 0.9), (2, 0.7)]}``;
    - a list of per-step dicts, e.g. ``[{"step": 1, "train_loss": 0.9}, ...]`` (missing keys
      allowed);
    - a path to a ``history.json`` (or its folder) holding any of these, or an object with
      ``to_dict()``/``as_dict()``/``.history``.

    Keys naming x values (``step``, ``epoch``, ``*_step``, ...) are not series. ``None``, NaN and
    non-numeric entries are dropped.
    """
    history = _load_history(history)
    if isinstance(history, list):
        pairs: dict[str, list[tuple[float, float]]] = {}
        for index, record in enumerate(history):
            if not isinstance(record, Mapping):
                raise LabkitError(
                    f"loss_curves: history[{index}] is {type(record).__name__}: a list history "
                    "must hold one dict per step"
                )
            step = _as_number(record.get("step", index))
            for key, value in record.items():
                number = _as_number(value)
                if not _is_step_key(key) and number is not None:
                    pairs.setdefault(key, []).append((index if step is None else step, number))
        return {k: (np.array([p[0] for p in v]), np.array([p[1] for p in v]))
                for k, v in pairs.items()}
    if not isinstance(history, Mapping):
        raise LabkitError(
            f"loss_curves: history is {type(history).__name__}: pass a dict of lists, a list of "
            "per-step dicts or a path to history.json"
        )
    series = {}
    for key, values in history.items():
        if _is_step_key(key) or isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            continue
        if values and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in values):
            points = [(_as_number(s), _as_number(v)) for s, v in values]
        else:
            steps = None
            for step_key in (f"{key}_step", f"{key.split('_')[0]}_step", "step", "epoch"):
                candidate = history.get(step_key)
                if isinstance(candidate, Sequence) and len(candidate) == len(values):
                    steps = candidate
                    break
            steps = range(len(values)) if steps is None else steps
            points = [(_as_number(s), _as_number(v)) for s, v in zip(steps, values)]
        points = [(s, v) for s, v in points if s is not None and v is not None]
        if points:
            series[key] = (np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    return series


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    # 'valid' then left-pad with a growing window so the curve starts at the first point
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def loss_curves(
    history: Any,
    ax: Axes | None = None,
    keys: Sequence[str] | None = None,
    log_y: bool = True,
    title: str | None = None,
    smooth: int = 0,
    xlabel: str = "step",
    figsize: tuple[float, float] = (6.5, 3.5),
) -> tuple[Figure, Axes]:
    """Plot training curves from a ``history`` (dict, list of dicts or path to history.json; see
    :func:`history_series` for the accepted forms).

    ``keys`` picks the series (default: every series whose name contains "loss", else every
    numeric series). ``log_y`` uses a log scale when all values are positive. ``smooth > 1``
    overlays a moving average over that many points on a faint raw curve. Returns ``(fig, ax)``.
    """
    series = history_series(history)
    if keys is None:
        keys = [k for k in series if "loss" in k] or list(series)
    else:
        keys = list(keys)
        missing = [k for k in keys if k not in series]
        if missing:
            raise LabkitError(
                f"loss_curves: no numeric series {missing} in the history; it has {sorted(series)}"
            )
    with style():
        fig, ax = _new_axes(ax, figsize)
        for index, key in enumerate(keys):
            steps, values = series[key]
            colour = PALETTE[index % len(PALETTE)]
            marker = "o" if len(values) < 30 and key.startswith(("val", "test")) else None
            if smooth > 1 and len(values) > smooth:
                ax.plot(steps, values, color=colour, alpha=0.25, lw=0.8)
                ax.plot(steps, _moving_average(values, smooth), color=colour, lw=1.6, label=key)
            else:
                ax.plot(steps, values, color=colour, lw=1.4, label=key, marker=marker, ms=3)
        all_values = np.concatenate([series[k][1] for k in keys]) if keys else np.array([])
        if log_y and all_values.size and np.all(all_values > 0):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss" if all("loss" in k for k in keys) else "value")
        ax.grid(True, which="major")
        if title:
            ax.set_title(title)
        if keys:
            ax.legend()
    return fig, ax


# --------------------------------------------------------------------------------------- save
def figure_stem(name: str) -> str:
    """A safe file stem for a figure title: "01 STFT: leakage" -> "01_stft_leakage"."""
    stem = re.sub(r"\.(pdf|png|svg|jpe?g)$", "", str(name).strip(), flags=re.IGNORECASE)
    stem = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    if not stem:
        raise LabkitError(f"save: name={name!r} has no letters or digits to make a file name from")
    return stem


def figures_dir() -> Path:
    """Where :func:`save` writes by default: ``$LABKIT_FIGURES_DIR``, else ``build/figures`` in
    the labkit checkout, else ``./figures``."""
    env = os.environ.get("LABKIT_FIGURES_DIR")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    return root / "build" / "figures" if root is not None else Path.cwd() / "figures"


def save(
    fig: Figure | Axes | tuple,
    name: str,
    folder: str | os.PathLike | None = None,
    formats: Sequence[str] = ("pdf", "png"),
    dpi: int = 150,
) -> list[Path]:
    """Write ``fig`` as ``<folder>/<stem>.<format>`` for each format; returns the written paths.

    ``fig`` may be a figure, an axes, or the ``(fig, ax)`` a helper returned. ``name`` becomes a
    safe stem (:func:`figure_stem`); ``folder`` defaults to :func:`figures_dir` and is created.
    Files are written under a temporary name and renamed, so a report never picks up half a file.
    """
    if isinstance(fig, tuple) and fig:
        fig = fig[0]
    if isinstance(fig, Axes):
        fig = fig.figure
    if not isinstance(fig, Figure):
        raise LabkitError(f"save: fig is {type(fig).__name__}: pass a matplotlib Figure or Axes")
    stem = figure_stem(name)
    out_dir = Path(folder).expanduser() if folder is not None else figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        fmt = fmt.lower().lstrip(".")
        path = out_dir / f"{stem}.{fmt}"
        tmp = out_dir / f".{stem}.{fmt}.tmp"
        # no creation date in PDFs: the same figure gives the same bytes, diffs stay quiet
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with style():
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        os.replace(tmp, path)
        paths.append(path)
    return paths
