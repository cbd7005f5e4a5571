"""Pictures of Gabor atoms: atoms over a spectrogram, and rate-distortion curves.

Both follow :mod:`labkit.figures`' habit: ``ax=None`` creates a figure, the result is
``(fig, ax)``, nothing calls ``plt.show()``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["plot_atoms", "plot_rate_distortion"]


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def plot_atoms(params: Mapping[str, Any], audio: Any = None, sr: int = 16000, ax: Any = None,
               title: str | None = None, max_atoms: int = 5000, db_range: float = 60.0,
               figsize: tuple[float, float] = (9.0, 3.6)) -> tuple[Any, Any]:
    """Atoms as dots at (centre, frequency) over the spectrogram of ``audio`` (if given).

    ``params``: atom parameters (natural units, e.g. ``model.params()``). Dot area grows with
    the atom's width (4 points^2 per ms, smaller when more than 500 atoms are drawn), opacity with
    its amplitude in dB (the strongest ``db_range`` dB are visible). At most ``max_atoms`` of the strongest atoms are drawn. Returns ``(fig, ax)``.
    """
    import matplotlib.pyplot as plt

    from labkit import figures

    amplitude = _numpy(params["amplitude"]).astype(np.float64)
    centre, frequency = _numpy(params["centre"]), _numpy(params["frequency"])
    width = _numpy(params["width"])
    if audio is not None:
        fig, ax = figures.spectrogram(audio, sr, ax=ax, colorbar=False, db_range=80.0,
                                      figsize=figsize, n_fft=512, hop_length=128, cmap="Greys")
    else:
        with figures.style():
            fig, ax = plt.subplots(figsize=figsize) if ax is None else (ax.figure, ax)
            ax.set_xlim(0, float(centre.max()) if centre.size else 1.0)
            ax.set_ylim(0, sr / 2)
            ax.set_xlabel("time (s)")
            ax.set_ylabel("frequency (Hz)")
    order = np.argsort(amplitude)[::-1][:max_atoms]
    if order.size:
        level = 20 * np.log10(np.maximum(amplitude[order], 1e-12) / amplitude[order].max())
        alpha = np.clip(1 + level / db_range, 0.05, 1.0)
        colors = np.zeros((order.size, 4))
        colors[:] = (0.84, 0.37, 0.0, 1.0)  # the course palette's vermilion
        colors[:, 3] = alpha
        # area grows with the width in ms; many atoms get smaller dots so the picture stays legible
        crowding = math.sqrt(min(1.0, 500 / order.size))
        size = np.clip(4 * 1000 * width[order], 3, 150) * crowding
        with figures.style():
            ax.scatter(centre[order], frequency[order], s=size, c=colors, linewidths=0)
    if title:
        ax.set_title(title)
    elif order.size:
        ax.set_title(f"{amplitude.size} atoms")
    return fig, ax


def plot_rate_distortion(curves: Mapping[str, Sequence[Mapping[str, float]]], metric: str = "snr",
                         ax: Any = None, title: str | None = None,
                         figsize: tuple[float, float] = (6.0, 4.0)) -> tuple[Any, Any]:
    """Quality against measured bit rate: one line per method.

    ``curves``: ``{method: [{"kbps": ..., metric: ...}, ...]}`` (e.g. a clip's entries of
    ``benchmarks/results/atoms.json``). Returns ``(fig, ax)``.
    """
    import matplotlib.pyplot as plt

    from labkit import figures

    with figures.style():
        fig, ax = plt.subplots(figsize=figsize) if ax is None else (ax.figure, ax)
        for method, points in curves.items():
            points = sorted(points, key=lambda p: p["kbps"])
            ax.plot([p["kbps"] for p in points], [p[metric] for p in points], marker="o",
                    label=method)
        ax.set_xlabel("measured bit rate (kbit/s)")
        ax.set_ylabel({"snr": "SNR (dB)", "si_snr": "SI-SNR (dB)", "lsd": "LSD (B)",
                       "mel_distance": "mel distance (dB)"}.get(metric, metric))
        ax.legend()
        ax.grid(True)
        if title:
            ax.set_title(title)
    return fig, ax
