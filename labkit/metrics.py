"""How good is a separation (or a reconstruction)? SDR, SI-SDR, SNR and log-spectral distance.

Two SDR conventions live here, and they give different numbers on the same signals (typically
~2 dB apart), so every reported score must say which one it is:

- :func:`sdr` -- the **MUSDB convention** (SiSEC 2018, BSSEval v4 through ``museval``): the
  "images" SDR computed on 1 s frames, the median over frames, then (:func:`aggregate`) the median
  over tracks. Use it for tables that are compared with the literature. In this version the SDR of a
  frame is ``10 log10(|s|^2 / |s - s_hat|^2)`` (no distortion filter is applied to the target), so
  it is *not* invariant to a gain on the estimate.
- :func:`sdr_fast` -- a **whole-signal SDR** (BSSEval "sources" version, 512-tap distortion filter,
  through ``fast-bss-eval``): one number for the whole signal, invariant to a gain and to short
  filtering of the estimate. Use it during training and for quick comparisons.

Shapes. Inputs are NumPy arrays or torch tensors (any float dtype; they are evaluated in float64).

- Multi-source functions (:func:`sdr`, :func:`bss_eval`) take ``(sources, channels, samples)`` and
  return one value per source, ``(sources,)``.
- Per-signal functions (:func:`sdr_fast`, :func:`si_sdr`, :func:`snr`, :func:`lsd`) score each
  *signal* ``(channels, samples)`` as a whole: the channels are pooled (their energies add up, one
  gain and one distortion filter serve every channel). They accept ``(..., channels, samples)`` and
  return an array of the leading shape ``(...)``; so ``(sources, channels, samples)`` gives
  ``(sources,)``. A 2-D input is *one* signal ``(channels, samples)`` and a 1-D input one mono
  signal ``(samples,)``: both give a Python float. For several mono sources pass
  ``(sources, 1, samples)``.

Silence. Scores of a silent reference are undefined and come back as NaN (without warnings);
:func:`aggregate` ignores NaN, like museval's median ignores silent frames. A perfect estimate
gives ``+inf``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from labkit.errors import AudioError

__all__ = ["aggregate", "bss_eval", "lsd", "sdr", "sdr_fast", "si_sdr", "snr"]

Array = Any
"""A NumPy array or a torch tensor."""


# --------------------------------------------------------------------------- input handling
def _as_float64(x: Array, name: str) -> np.ndarray:
    """``x`` as a float64 NumPy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch for NumPy callers
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise AudioError(f"{name} has shape {x.shape}: expected (..., channels, samples) with at "
                         "least one sample")
    if not np.isfinite(x).all():
        raise AudioError(f"{name} contains NaN or infinite values: scores need finite audio")
    return x


def _pair(references: Array, estimates: Array, ndim: int | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 arrays of the same shape (and ``ndim`` dimensions if given)."""
    ref = _as_float64(references, "references")
    est = _as_float64(estimates, "estimates")
    if ref.shape != est.shape:
        raise AudioError(f"references have shape {ref.shape} but estimates {est.shape}: they "
                         "must match (same sources, channels and samples)")
    if ndim is not None and ref.ndim != ndim:
        raise AudioError(f"references have shape {ref.shape}: expected (sources, channels, "
                         "samples); for one mono source use x[None, None]")
    return ref, est


def _signals(x: np.ndarray) -> np.ndarray:
    """Pool channels: ``(..., channels, samples)`` -> ``(..., channels * samples)``."""
    if x.ndim == 1:
        return x
    return x.reshape(*x.shape[:-2], -1)


def _result(values: np.ndarray) -> np.ndarray | float:
    """A float for a single signal, else the array."""
    return float(values) if values.ndim == 0 else values


def _ratio_db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)`` with ``x/0 = +inf`` and ``0/x = -inf``, without warnings."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    both = (num > 0) & (den > 0)
    out[both] = 10.0 * np.log10(num[both] / den[both])
    out[(num > 0) & (den == 0)] = np.inf
    out[(num == 0) & (den > 0)] = -np.inf
    return out


# --------------------------------------------------------------------------- MUSDB convention
def _museval_frames(ref: np.ndarray, est: np.ndarray, window: int) -> tuple[np.ndarray, ...]:
    """museval's BSSEval v4 (images, fixed filters) on frames: four arrays ``(sources, frames)``."""
    import museval.metrics  # lazy: museval needs the ffmpeg binaries at import time

    if _silent(ref) or _silent(est):
        # museval refuses a source that is silent throughout; every frame would be NaN anyway.
        empty = np.full((ref.shape[0], len(_frame_slices(ref.shape[-1], window))), np.nan)
        return empty, empty.copy(), empty.copy(), empty.copy()
    # museval wants (sources, samples, channels)
    sdr_, isr, sir, sar, _ = museval.metrics.bss_eval(
        np.ascontiguousarray(ref.transpose(0, 2, 1)),
        np.ascontiguousarray(est.transpose(0, 2, 1)),
        window=window, hop=window, compute_permutation=False, filters_len=512,
        framewise_filters=False, bsseval_sources_version=False,
    )
    return sdr_, isr, sir, sar


def _frame_slices(length: int, window: int) -> list[slice]:
    """museval's framing with hop = window: whole frames only, the partial last one dropped."""
    if window >= length:
        return [slice(0, length)]
    return [slice(i * window, (i + 1) * window) for i in range(length // window)]


def _silent(x: np.ndarray) -> bool:
    """museval's test for a silent frame of any source (its channel sum is zero at every sample)."""
    return bool(np.any(np.all(x.sum(axis=1) == 0, axis=1)))


def _direct_sdr_frames(ref: np.ndarray, est: np.ndarray, window: int) -> np.ndarray:
    """museval's v4 images SDR per frame, computed directly: ``(sources, frames)``.

    In the images version the target is the reference itself and the three error terms add up to
    ``estimate - reference``, so a frame's SDR is its SNR; frames in which any reference or any
    estimate is silent are NaN for every source, as in museval.
    """
    frames = _frame_slices(ref.shape[-1], window)
    out = np.full((ref.shape[0], len(frames)), np.nan)
    for t, f in enumerate(frames):
        r, e = ref[..., f], est[..., f]
        if _silent(r) or _silent(e):
            continue
        out[:, t] = _ratio_db((r**2).sum(axis=(1, 2)), ((e - r) ** 2).sum(axis=(1, 2)))
    return out


def _nanmedian(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median ignoring NaN; NaN (without a warning) where every value is NaN."""
    x = np.asarray(x, dtype=float)
    out = np.full(np.delete(x.shape, axis), np.nan)
    valid = ~np.isnan(x).all(axis=axis)
    if valid.any():
        moved = np.moveaxis(x, axis, -1)[valid]
        out[valid] = np.nanmedian(moved, axis=-1)
    return out


def sdr(references: Array, estimates: Array, sr: int = 44100, window_seconds: float = 1.0,
        return_frames: bool = False, backend: str = "museval"
        ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """SDR in the MUSDB convention: BSSEval v4 images SDR on frames, median over frames.

    ``references``, ``estimates``: ``(sources, channels, samples)`` at sample rate ``sr``. Frames are
    ``window_seconds`` long without overlap (museval's ``eval_mus_track`` uses 1 s); a last partial
    frame is dropped, and a signal shorter than one frame is one frame. A frame in which any
    reference or any estimate is silent is NaN for every source and left out of the median (a
    source that is NaN in every frame gives NaN).

    ``backend="museval"`` calls ``museval.metrics.bss_eval`` (needs the ffmpeg binaries; ~37 s for
    4 x 30 s of stereo on 2 cores, plus ~3 s to import museval once). ``backend="direct"`` computes
    the same numbers (to 1e-9 dB in the tests, including silent frames) from the identity "v4 images
    SDR of a frame = its SNR", in milliseconds; the museval silent-whole-source error becomes NaN in
    both.

    Returns the medians ``(sources,)`` in dB, or ``(medians, frames)`` with the per-frame SDR
    ``(sources, frames)`` when ``return_frames`` is true.
    """
    ref, est = _pair(references, estimates, ndim=3)
    window = _window(sr, window_seconds)
    if backend == "museval":
        frames = _museval_frames(ref, est, window)[0]
    elif backend == "direct":
        frames = _direct_sdr_frames(ref, est, window)
    else:
        raise ValueError(f"backend={backend!r}: use 'museval' or 'direct'")
    medians = _nanmedian(frames)
    return (medians, frames) if return_frames else medians


def _window(sr: int, window_seconds: float) -> int:
    window = round(sr * window_seconds)
    if window < 1:
        raise ValueError(f"sr={sr!r}, window_seconds={window_seconds!r}: a frame must hold at "
                         "least one sample")
    return window


def bss_eval(references: Array, estimates: Array, sr: int = 44100,
             window_seconds: float = 1.0) -> dict[str, np.ndarray]:
    """All four BSSEval v4 scores in the MUSDB convention (museval, images, 1 s frames).

    Shapes and frames as in :func:`sdr`. Returns ``{"SDR", "ISR", "SIR", "SAR"}``, each the median
    over frames ``(sources,)`` in dB (NaN frames ignored). Computing all four costs the same as
    :func:`sdr` with ``backend="museval"``.
    """
    ref, est = _pair(references, estimates, ndim=3)
    frames = _museval_frames(ref, est, _window(sr, window_seconds))
    return {name: _nanmedian(f) for name, f in zip(("SDR", "ISR", "SIR", "SAR"), frames)}


# --------------------------------------------------------------------------- whole-signal scores
def sdr_fast(references: Array, estimates: Array, filter_length: int = 512
             ) -> np.ndarray | float:
    """Whole-signal SDR (BSSEval "sources" version) through fast-bss-eval, in dB.

    The estimate is projected onto the reference filtered by any ``filter_length``-tap filter;
    SDR = energy of that projection / energy of the rest. So a gain or a short filter on the
    estimate costs nothing. Equals museval's ``bss_eval(..., window=inf,
    bsseval_sources_version=True)`` for mono signals (tested). Channels are pooled by
    concatenating them in time (``filter_length`` zeros apart, so that no filter tap crosses from
    one channel to the next): one filter for all channels, one score per signal.

    ``references``, ``estimates``: ``(..., channels, samples)`` (see the module docstring);
    returns ``(...)``, e.g. ``(sources,)``. Silent reference: NaN. Silent estimate: ``-inf``.
    Perfect (or filtered-copy) estimate: ``+inf`` or a very large value.
    """
    import fast_bss_eval
    import torch

    ref, est = _pair(references, estimates)
    if ref.ndim >= 2:
        # zeros between the channels, so that no filter tap reaches from one channel into the next
        gap = [(0, 0)] * (ref.ndim - 1) + [(0, filter_length)]
        ref, est = _signals(np.pad(ref, gap)), _signals(np.pad(est, gap))
    lead = ref.shape[:-1]
    ref, est = ref.reshape(-1, ref.shape[-1]), est.reshape(-1, est.shape[-1])
    ref_norm = np.linalg.norm(ref, axis=-1)
    est_norm = np.linalg.norm(est, axis=-1)
    out = np.full(len(ref), np.nan)
    out[(ref_norm > 0) & (est_norm == 0)] = -np.inf
    for i in np.flatnonzero((ref_norm > 0) & (est_norm > 0)):
        # Unit-norm inputs: fast-bss-eval clamps norms below 1e-6, which would bias quiet signals.
        r = torch.from_numpy(ref[i] / ref_norm[i])[None]
        e = torch.from_numpy(est[i] / est_norm[i])[None]
        # One signal per call: torch's *batched* linalg.solve fails on some CPU builds once
        # torch.set_num_threads() has been called, and this keeps memory to one signal.
        # sdr_loss(pairwise=True) skips the permutation search of fast_bss_eval.sdr (which fails
        # on an infinite score); the order of sources is known here.
        neg = fast_bss_eval.sdr_loss(e, r, filter_length=filter_length, pairwise=True)
        out[i] = -float(neg.reshape(-1)[0])
    return _result(out.reshape(lead))


def si_sdr(reference: Array, estimate: Array, eps: float = 0.0) -> np.ndarray | float:
    """Scale-invariant SDR (Le Roux et al., 2019) in dB, channels pooled, no mean removal.

    ``target = a * reference`` with ``a = <estimate, reference> / |reference|^2`` (one gain per
    signal), ``SI-SDR = 10 log10(|target|^2 / |estimate - target|^2)``. Any nonzero gain on the
    estimate leaves it unchanged.

    Shapes: ``(..., channels, samples)`` -> ``(...)`` (see the module docstring). With ``eps = 0``
    the exact rules are: silent reference -> NaN; estimate an exact scaled copy -> ``+inf``;
    estimate silent or orthogonal to the reference -> ``-inf``. With ``eps > 0`` (for training
    losses) ``a = (<e, r> + eps) / (|r|^2 + eps)`` and the ratio is ``(|t|^2 + eps) / (|e - t|^2 +
    eps)``: always finite.
    """
    ref, est = _pair(reference, estimate)
    ref, est = _signals(ref), _signals(est)
    ref_energy = (ref**2).sum(-1)
    dot = (ref * est).sum(-1)
    if eps > 0:
        gain = (dot + eps) / (ref_energy + eps)
        target = gain[..., None] * ref
        out = 10.0 * np.log10(((target**2).sum(-1) + eps) / (((est - target) ** 2).sum(-1) + eps))
        return _result(out)
    gain = np.divide(dot, ref_energy, out=np.zeros_like(dot), where=ref_energy > 0)
    target = gain[..., None] * ref
    target_energy = (target**2).sum(-1)
    out = _ratio_db(target_energy, ((est - target) ** 2).sum(-1))
    out[target_energy == 0] = -np.inf  # silent or orthogonal estimate: nothing of the reference
    out[ref_energy == 0] = np.nan
    return _result(out)


def snr(reference: Array, estimate: Array) -> np.ndarray | float:
    """Signal-to-noise ratio ``10 log10(|reference|^2 / |reference - estimate|^2)`` in dB.

    Channels pooled; shapes ``(..., channels, samples)`` -> ``(...)`` (see the module docstring).
    Not scale invariant: ``estimate = g * reference`` gives ``-20 log10 |1 - g|``. Silent reference
    -> NaN; perfect estimate -> ``+inf``; silent estimate -> 0 dB.
    """
    ref, est = _pair(reference, estimate)
    ref, est = _signals(ref), _signals(est)
    ref_energy = (ref**2).sum(-1)
    out = _ratio_db(ref_energy, ((ref - est) ** 2).sum(-1))
    out[ref_energy == 0] = np.nan
    return _result(out)


# --------------------------------------------------------------------------- spectral distance
def _power_spectrogram(x: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``|STFT|^2`` of ``(..., channels, samples)`` -> ``(..., channels, bins, frames)``."""
    import torch

    from labkit.spectral import stft

    spec = stft(torch.from_numpy(x), n_fft=n_fft, hop_length=hop_length)
    return (spec.real**2 + spec.imag**2).numpy()


def lsd(reference: Array, estimate: Array, sr: int | None = None, n_fft: int = 2048,
        hop_length: int = 512, match_energy: bool = False, eps: float = 1e-10,
        freq_range: tuple[float | None, float | None] | None = None) -> np.ndarray | float:
    """Log-spectral distance in bels: 0 for identical spectra, larger is worse.

    With ``P = |STFT|^2`` (Hann window ``n_fft``, hop ``hop_length``, centred frames)::

        LSD = mean over frames and channels of
              sqrt( mean over bins of (log10(P_ref + eps) - log10(P_est + eps))^2 )

    This is the definition used in the audio super-resolution literature (Kuleshov et al. 2017,
    NU-Wave, AudioSR): log10 of *power* without a factor 10, so the unit is the bel; multiply by
    10 for dB. A constant gain ``g`` on the estimate gives ``LSD = |20 log10 g| / 10 = |2 log10 g|``
    (tested). ``match_energy=True`` first rescales each estimate signal to its reference's total
    energy, which removes such a gain (a silent estimate stays silent).

    ``freq_range=(low_hz, high_hz)`` keeps only the bins whose centre frequency lies in that
    closed range (``None`` for an open end; needs ``sr``): e.g. ``(cutoff, None)`` scores only the
    band a super-resolution model had to invent.

    Shapes: ``(..., channels, samples)`` -> ``(...)``, a float for one signal (module docstring).
    """
    ref, est = _pair(reference, estimate)
    if match_energy:
        ref_energy = (_signals(ref) ** 2).sum(-1)
        est_energy = (_signals(est) ** 2).sum(-1)
        gain = np.sqrt(np.divide(ref_energy, est_energy, out=np.ones_like(est_energy),
                                 where=est_energy > 0))
        est = est * (gain[..., None, None] if est.ndim >= 2 else gain)
    bins = _bins(n_fft, sr, freq_range)
    log_ref = np.log10(_power_spectrogram(ref, n_fft, hop_length)[..., bins, :] + eps)
    log_est = np.log10(_power_spectrogram(est, n_fft, hop_length)[..., bins, :] + eps)
    per_frame = np.sqrt(((log_ref - log_est) ** 2).mean(axis=-2))  # (..., [channels,] frames)
    pooled = per_frame.mean(axis=(-2, -1)) if ref.ndim >= 2 else per_frame.mean(axis=-1)
    return _result(pooled)


def _bins(n_fft: int, sr: int | None, freq_range: tuple[float | None, float | None] | None
          ) -> np.ndarray:
    """Indices of the STFT bins to score."""
    n_bins = n_fft // 2 + 1
    if freq_range is None:
        return np.arange(n_bins)
    if sr is None:
        raise ValueError(f"freq_range={freq_range!r} needs the sample rate: pass sr=...")
    low, high = freq_range
    freqs = np.arange(n_bins) * sr / n_fft
    keep = np.ones(n_bins, dtype=bool)
    if low is not None:
        keep &= freqs >= low
    if high is not None:
        keep &= freqs <= high
    if not keep.any():
        raise ValueError(f"freq_range={freq_range!r} Hz holds no STFT bin (bins are {sr / n_fft:g}"
                         f" Hz apart, from 0 to {sr / 2:g} Hz)")
    return np.flatnonzero(keep)


# --------------------------------------------------------------------------- over tracks
def aggregate(per_track: Sequence[dict[str, float]]) -> dict[str, float]:
    """Median over tracks of each score (the MUSDB convention), ignoring NaN.

    ``per_track``: one ``{name: score}`` dict per track (e.g. ``{"vocals": 5.1, "accompaniment":
    11.8}``). Returns ``{name: median}`` over the tracks that have a non-NaN value for that name
    (NaN if none has), keys in first-seen order.
    """
    names: dict[str, None] = {}
    for scores in per_track:
        names.update(dict.fromkeys(scores))
    out = {}
    for name in names:
        values = np.array([float(s[name]) for s in per_track if name in s])
        out[name] = float(_nanmedian(values[None])[0])
    return out
