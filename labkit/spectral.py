"""Short-time Fourier tools on torch: windows, framing, STFT/ISTFT, dB scales, mel, Griffin-Lim.

Every function accepts a NumPy array or a torch tensor and returns torch (float stays at its
precision, integers become float32), with any batch dimensions in front:

- signals ``(..., samples)``, e.g. ``(batch, channels, samples)``;
- spectrograms ``(..., bins, frames)``, e.g. ``(batch, channels, bins, frames)``, with
  ``bins = n_fft // 2 + 1``; complex ones are named ``*_complex`` or ``X``.

The STFT follows ``torch.stft``/``librosa.stft``: frame ``t`` starts at sample ``t * hop_length``
of the (padded) signal, and ``center=True`` pads ``n_fft // 2`` samples on both sides, so that
frame ``t`` is centred on sample ``t * hop_length``. Padding defaults to ``"reflect"`` (torch's and
torchaudio's default, and librosa's before 0.10); librosa 0.10+ pads with zeros (``"constant"``)
by default: pass ``pad_mode="constant"`` to reproduce it exactly.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from labkit.errors import LabkitError

WINDOWS: tuple[str, ...] = ("hann", "hamming", "blackman", "rectangular", "boxcar", "ones",
                            "sine")

_PAD_MODES = ("reflect", "constant", "replicate", "circular")


# --------------------------------------------------------------------------- helpers
def _as_tensor(x: Any, name: str = "x") -> Tensor:
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple, float, int)):
        # a copy only for views torch cannot share (negative strides, e.g. x[::-1])
        t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else np.asarray(x))
    else:
        raise LabkitError(f"{name}: expected a torch tensor or NumPy array, got {type(x).__name__}")
    if not (t.is_floating_point() or t.is_complex()):
        t = t.to(torch.float32)
    return t


def _real_dtype(t: Tensor) -> torch.dtype:
    return t.real.dtype if t.is_complex() else t.dtype


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LabkitError(f"{name}={value!r}: expected a positive whole number")
    return int(value)


def _resolve_window(window: str | Tensor | np.ndarray, win_length: int, like: Tensor) -> Tensor:
    if isinstance(window, str):
        return get_window(window, win_length, periodic=True, dtype=_real_dtype(like),
                          device=like.device)
    w = _as_tensor(window, "window").to(dtype=_real_dtype(like), device=like.device)
    if w.shape != (win_length,):
        raise LabkitError(f"window has shape {tuple(w.shape)}; expected ({win_length},), the "
                          "window length")
    return w


def _stft_sizes(n_fft: int, hop_length: int, win_length: int | None) -> tuple[int, int, int]:
    n_fft = _positive_int("n_fft", n_fft)
    hop_length = _positive_int("hop_length", hop_length)
    win_length = n_fft if win_length is None else _positive_int("win_length", win_length)
    if win_length > n_fft:
        raise LabkitError(f"win_length={win_length} is longer than n_fft={n_fft}; expected "
                          "win_length <= n_fft")
    return n_fft, hop_length, win_length


# --------------------------------------------------------------------------- windows and frames
def get_window(name: str, n: int, periodic: bool = True, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
    """The analysis window ``name`` of length ``n``, shape ``(n,)``.

    Names: ``"hann"``, ``"hamming"``, ``"blackman"``, ``"rectangular"`` (= ``"boxcar"``,
    ``"ones"``), ``"sine"``. ``periodic=True`` gives the DFT-even window used for spectral
    analysis (for hann, hamming, blackman what ``scipy.signal.get_window(name, n, fftbins=True)``
    and librosa use); ``periodic=False`` the symmetric one used for filter design. ``"sine"`` is
    ``sin(pi k / n)`` (periodic, the square root of Hann) or ``sin(pi (k + 1/2) / n)``
    (symmetric, the MDCT window); both make overlap-add of their squares flat at hop ``n/2``.
    """
    n = _positive_int("n", n)
    key = name.lower() if isinstance(name, str) else name
    kwargs = {"dtype": dtype, "device": device}
    if key == "hann":
        return torch.hann_window(n, periodic=periodic, **kwargs)
    if key == "hamming":
        return torch.hamming_window(n, periodic=periodic, **kwargs)
    if key == "blackman":
        return torch.blackman_window(n, periodic=periodic, **kwargs)
    if key in ("rectangular", "boxcar", "ones"):
        return torch.ones(n, **kwargs)
    if key == "sine":
        # Both variants square-sum to exactly 1 at hop n/2 (Princen-Bradley), the point of the
        # sine window: periodic sin(pi k / n) is the square root of the periodic Hann window,
        # symmetric sin(pi (k + 1/2) / n) is the MDCT window (scipy's symmetric "cosine").
        k = torch.arange(n, dtype=torch.float64)
        return torch.sin(math.pi * (k if periodic else k + 0.5) / n).to(**kwargs)
    raise LabkitError(f"window {name!r} is not known; use one of {', '.join(WINDOWS)} "
                      "(or pass the window itself as a tensor)")


def frame(x: Any, frame_length: int, hop_length: int, pad: bool = False) -> Tensor:
    """Cut ``x`` ``(..., samples)`` into frames ``(..., n_frames, frame_length)``.

    Frame ``t`` holds samples ``t * hop_length`` to ``t * hop_length + frame_length``. Without
    ``pad`` the frames stop at the last complete one (``n_frames = 1 + (samples - frame_length)
    // hop_length``); ``pad=True`` appends zeros so that every sample lands in a frame. The
    result is a view of ``x`` when no padding was needed (write to a copy).
    """
    x = _as_tensor(x)
    frame_length = _positive_int("frame_length", frame_length)
    hop_length = _positive_int("hop_length", hop_length)
    if x.ndim == 0:
        raise LabkitError("x is a scalar; expected a signal (..., samples)")
    samples = x.shape[-1]
    if pad:
        n_frames = 1 + max(0, math.ceil((samples - frame_length) / hop_length))
        missing = (n_frames - 1) * hop_length + frame_length - samples
        if missing > 0:
            x = torch.nn.functional.pad(x, (0, missing))
    elif samples < frame_length:
        raise LabkitError(f"x has {samples} samples, fewer than frame_length={frame_length}; "
                          "use pad=True or a shorter frame")
    return x.unfold(-1, frame_length, hop_length)


def overlap_add_envelope(window: str | Any, hop_length: int, n_frames: int,
                         n_fft: int | None = None, power: float = 2.0) -> Tensor:
    """Sum of ``n_frames`` copies of ``|window| ** power`` shifted by ``hop_length``.

    Shape ``(n_fft + hop_length * (n_frames - 1),)``. With ``power=2`` this is what ISTFT divides
    by (analysis and synthesis window both ``window``): where it is flat, overlap-add alone
    reconstructs the signal. ``window`` is a name (then ``n_fft`` gives its length) or a tensor.
    """
    hop_length = _positive_int("hop_length", hop_length)
    n_frames = _positive_int("n_frames", n_frames)
    if isinstance(window, str):
        if n_fft is None:
            raise LabkitError(f"window={window!r} is a name: pass n_fft, its length")
        w = get_window(window, n_fft, dtype=torch.float64)
    else:
        w = _as_tensor(window, "window").to(torch.float64)
    length = w.shape[-1] + hop_length * (n_frames - 1)
    # fold is the overlap-add primitive: it sums columns into a signal at the given stride.
    frames = (w.abs() ** power).expand(n_frames, -1).T[None]
    env = torch.nn.functional.fold(frames, (1, length), (1, w.shape[-1]),
                                   stride=(1, hop_length))
    return env.reshape(length)


def cola_deviation(window: str | Any = "hann", n_fft: int = 1024, hop_length: int = 256,
                   power: float = 2.0) -> float:
    """Ripple of the steady-state overlap-add envelope: ``(max - min) / mean``.

    0 means the squared window (``power=2``, the weighted overlap-add condition ISTFT relies on)
    sums to a constant at this hop; ``power=1`` tests the plain COLA condition instead. Examples:
    periodic Hann at ``n_fft/4`` -> 0; at ``n_fft/2`` -> 2/3 (only ``hann`` itself, ``power=1``,
    is COLA there; ISTFT still inverts exactly because it divides by the envelope);
    rectangular at a hop that does not divide ``n_fft`` -> clearly above 0.
    """
    if isinstance(window, str):
        w = get_window(window, _positive_int("n_fft", n_fft), dtype=torch.float64)
    else:
        w = _as_tensor(window, "window").to(torch.float64)
    hop_length = _positive_int("hop_length", hop_length)
    # Steady state: sample k of every hop-long period receives w[k], w[k + hop], w[k + 2 hop]...
    padded = torch.nn.functional.pad(w.abs() ** power, (0, (-w.shape[-1]) % hop_length))
    period = padded.reshape(-1, hop_length).sum(dim=0)
    mean = period.mean()
    if mean == 0:
        raise LabkitError("the window is all zeros: its overlap-add envelope is 0 everywhere")
    return float((period.max() - period.min()) / mean)


# --------------------------------------------------------------------------- STFT
def stft(x: Any, n_fft: int = 1024, hop_length: int = 256, win_length: int | None = None,
         window: str | Any = "hann", center: bool = True,
         pad_mode: Literal["reflect", "constant", "replicate", "circular"] = "reflect") -> Tensor:
    """Complex STFT of ``x`` ``(..., samples)`` -> ``(..., n_fft // 2 + 1, frames)``.

    ``window`` is a name (see :func:`get_window`, periodic) or a tensor of length ``win_length``
    (default ``n_fft``), zero-padded to ``n_fft`` in the middle. ``center=True`` pads ``n_fft // 2``
    on both sides with ``pad_mode``; frames = ``1 + samples // hop_length`` then. Unnormalised,
    like ``torch.stft`` and ``librosa.stft``.
    """
    x = _as_tensor(x)
    if x.is_complex():
        raise LabkitError("x is complex; expected a real signal (..., samples)")
    n_fft, hop_length, win_length = _stft_sizes(n_fft, hop_length, win_length)
    if pad_mode not in _PAD_MODES:
        raise LabkitError(f"pad_mode={pad_mode!r}: use one of {', '.join(_PAD_MODES)}")
    if x.ndim == 0:
        raise LabkitError("x is a scalar; expected a signal (..., samples)")
    samples = x.shape[-1]
    if center and pad_mode == "reflect" and samples <= n_fft // 2:
        raise LabkitError(f"x has {samples} samples; reflect padding needs more than "
                          f"n_fft // 2 = {n_fft // 2}: use pad_mode='constant' or a smaller n_fft")
    if not center and samples < n_fft:
        raise LabkitError(f"x has {samples} samples, fewer than n_fft={n_fft}; use center=True "
                          "or a smaller n_fft")
    w = _resolve_window(window, win_length, x)
    flat = x.reshape(-1, samples)
    spec = torch.stft(flat, n_fft, hop_length=hop_length, win_length=win_length, window=w,
                      center=center, pad_mode=pad_mode, normalized=False, onesided=True,
                      return_complex=True)
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


def istft(X: Any, n_fft: int = 1024, hop_length: int = 256, win_length: int | None = None,
          window: str | Any = "hann", center: bool = True, length: int | None = None) -> Tensor:
    """Inverse of :func:`stft`: ``(..., n_fft // 2 + 1, frames)`` complex -> ``(..., samples)``.

    Weighted overlap-add divided by the summed squared window, so any window/hop whose envelope
    never vanishes inverts exactly. ``length`` trims or zero-pads the output to that many
    samples (pass the original length to undo the centring exactly).
    """
    X = _as_tensor(X, "X")
    if not X.is_complex():
        raise LabkitError("X is real; expected a complex spectrogram (..., bins, frames) "
                          "(combine magnitude and phase with polar())")
    n_fft, hop_length, win_length = _stft_sizes(n_fft, hop_length, win_length)
    if X.ndim < 2 or X.shape[-2] != n_fft // 2 + 1:
        raise LabkitError(f"X has shape {tuple(X.shape)}; expected (..., {n_fft // 2 + 1}, frames) "
                          f"for n_fft={n_fft} (n_fft = 2 * (bins - 1))")
    if hop_length > win_length:
        raise LabkitError(f"hop_length={hop_length} is longer than the window ({win_length}): "
                          "samples between windows are lost; use hop_length <= win_length")
    w = _resolve_window(window, win_length, X)
    flat = X.reshape(-1, *X.shape[-2:])
    try:
        y = torch.istft(flat, n_fft, hop_length=hop_length, win_length=win_length, window=w,
                        center=center, normalized=False, onesided=True, length=length)
    except RuntimeError as err:
        if "window overlap add" not in str(err):
            raise
        raise LabkitError(f"the window's overlap-add envelope vanishes somewhere at hop_length="
                          f"{hop_length}; use a smaller hop or another window ({err})") from err
    return y.reshape(*X.shape[:-2], y.shape[-1])


# --------------------------------------------------------------------------- magnitude, phase, dB
def magnitude(X: Any, power: float = 1.0) -> Tensor:
    """``|X| ** power`` (1: magnitude, 2: power), same shape as ``X``."""
    return _as_tensor(X, "X").abs() ** power


def phase(X: Any) -> Tensor:
    """The angle of each complex bin in radians, in (-pi, pi], same shape as ``X``."""
    return torch.angle(_as_tensor(X, "X"))


def polar(mag: Any, phase: Any) -> Tensor:
    """The complex spectrogram ``mag * exp(i phase)``; shapes broadcast."""
    mag = _as_tensor(mag, "mag")
    phase = _as_tensor(phase, "phase").to(mag.dtype)
    mag, phase = torch.broadcast_tensors(mag, phase)
    return torch.polar(mag, phase)


def _spectrogram_dims(t: Tensor) -> tuple[int, ...]:
    return tuple(range(-min(t.ndim, 2), 0))


def power_to_db(power: Any, ref: float | str | Callable[[Tensor], Any] = 1.0,
                amin: float = 1e-10, top_db: float | None = 80.0) -> Tensor:
    """``10 log10(max(amin, power) / max(amin, ref))`` like ``librosa.power_to_db``.

    ``ref`` is a number, ``"max"`` or a function of the tensor. ``"max"`` and the ``top_db``
    floor (values below ``max - top_db`` are raised to it) act per spectrogram, i.e. over the
    last two dims ``(bins, frames)``, so a batch gives what each item gives alone; on one 2-D
    spectrogram this equals librosa.
    """
    power = _as_tensor(power, "power")
    if power.is_complex():
        raise LabkitError("power is complex; pass magnitude(X, power=2) (or use amplitude_to_db)")
    if not amin > 0:
        raise LabkitError(f"amin={amin!r}: expected a positive floor, e.g. 1e-10")
    dims = _spectrogram_dims(power)
    if isinstance(ref, str):
        if ref != "max":
            raise LabkitError(f"ref={ref!r}: use a number, 'max' or a function")
        ref_value = power.amax(dim=dims, keepdim=True)
    elif callable(ref):
        ref_value = torch.as_tensor(ref(power), dtype=power.dtype, device=power.device)
    else:
        ref_value = torch.as_tensor(abs(ref), dtype=power.dtype, device=power.device)
    db = 10.0 * torch.log10(power.clamp_min(amin)) - 10.0 * torch.log10(ref_value.clamp_min(amin))
    if top_db is not None:
        if top_db < 0:
            raise LabkitError(f"top_db={top_db!r}: expected a non-negative range in dB, or None")
        db = torch.maximum(db, db.amax(dim=dims, keepdim=True) - top_db)
    return db


def amplitude_to_db(mag: Any, ref: float | str | Callable[[Tensor], Any] = 1.0,
                    amin: float = 1e-5, top_db: float | None = 80.0) -> Tensor:
    """``20 log10(max(amin, |mag|) / max(amin, ref))`` like ``librosa.amplitude_to_db``.

    A complex input uses its magnitude. ``ref``/``top_db`` act per spectrogram as in
    :func:`power_to_db`. Silence gives ``20 log10(amin / ref)`` (-100 dB), never -inf or NaN.
    """
    mag = _as_tensor(mag, "mag").abs()
    if isinstance(ref, str):
        if ref != "max":
            raise LabkitError(f"ref={ref!r}: use a number, 'max' or a function")
        ref_value: Any = mag.amax(dim=_spectrogram_dims(mag), keepdim=True)
    elif callable(ref):
        ref_value = torch.as_tensor(ref(mag), dtype=mag.dtype, device=mag.device)
    else:
        ref_value = torch.as_tensor(abs(ref), dtype=mag.dtype, device=mag.device)
    return power_to_db(mag.square(), ref=lambda _: ref_value.square(), amin=amin ** 2,
                       top_db=top_db)


# --------------------------------------------------------------------------- mel
_F_SP = 200.0 / 3  # Slaney: 66.67 Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0  # Slaney: 27 mels per factor 6.4 in frequency above 1 kHz


def hz_to_mel(frequencies: Any, htk: bool = False) -> Any:
    """Hz to mels: HTK ``2595 log10(1 + f / 700)`` or Slaney's (linear below 1 kHz, log above).

    Takes a float, NumPy array or tensor and returns the same kind; matches ``librosa.hz_to_mel``.
    """
    is_tensor = isinstance(frequencies, Tensor)
    f = frequencies.double() if is_tensor else np.asarray(frequencies, dtype=np.float64)
    lib = torch if is_tensor else np
    if htk:
        mels = 2595.0 * lib.log10(1.0 + f / 700.0)
    else:
        # the clamp keeps log() away from 0 in the branch where() throws away
        log_part = _MIN_LOG_MEL + lib.log(lib.maximum(f, f * 0 + _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
        mels = lib.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)
    if is_tensor:
        return mels.to(frequencies.dtype if frequencies.is_floating_point() else torch.float64)
    return float(mels) if np.ndim(frequencies) == 0 else mels


def mel_to_hz(mels: Any, htk: bool = False) -> Any:
    """Mels to Hz, the inverse of :func:`hz_to_mel` (same ``htk`` switch, same types)."""
    is_tensor = isinstance(mels, Tensor)
    m = mels.double() if is_tensor else np.asarray(mels, dtype=np.float64)
    lib = torch if is_tensor else np
    if htk:
        freqs = 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    else:
        log_part = _MIN_LOG_HZ * lib.exp(_LOGSTEP * (lib.maximum(m, m * 0 + _MIN_LOG_MEL)
                                                     - _MIN_LOG_MEL))
        freqs = lib.where(m >= _MIN_LOG_MEL, log_part, _F_SP * m)
    if is_tensor:
        return freqs.to(mels.dtype if mels.is_floating_point() else torch.float64)
    return float(freqs) if np.ndim(mels) == 0 else freqs


def mel_filterbank(sr: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: float | None = None, norm: Literal["slaney"] | float | None = "slaney",
                   htk: bool = False) -> Tensor:
    """Triangular mel filters, float32 ``(n_mels, n_fft // 2 + 1)``; equals ``librosa.filters.mel``.

    ``n_mels + 2`` points equally spaced in mels between ``fmin`` and ``fmax`` (default sr/2)
    give each filter's start, peak and end. ``norm="slaney"`` scales each triangle to unit area
    (2 / bandwidth in Hz), a number ``p`` to unit p-norm, None leaves peaks at 1. Warns, as
    librosa does, when some filters catch no FFT bin (too many mels for ``n_fft``).
    """
    n_fft = _positive_int("n_fft", n_fft)
    n_mels = _positive_int("n_mels", n_mels)
    fmax = sr / 2.0 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax:
        raise LabkitError(f"fmin={fmin!r}, fmax={fmax!r}: expected 0 <= fmin < fmax")
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_points = np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2)
    hz_points = mel_to_hz(mel_points, htk)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    elif norm is not None:
        if isinstance(norm, str) or not norm > 0:
            raise LabkitError(f"norm={norm!r}: use 'slaney', a positive number (p-norm) or None")
        lengths = np.sum(np.abs(weights) ** norm, axis=1, keepdims=True) ** (1.0 / norm)
        weights = np.divide(weights, lengths, out=np.zeros_like(weights), where=lengths > 0)
    empty = ~(weights.max(axis=1) > 0)
    if empty.any():
        warnings.warn(f"{int(empty.sum())} of {n_mels} mel filters are empty (no FFT bin falls "
                      f"inside them); use fewer mels or a larger n_fft", stacklevel=2)
    return torch.from_numpy(weights.astype(np.float32))


def mel_spectrogram(x: Any, sr: int, n_fft: int = 2048, hop_length: int = 512,
                    n_mels: int = 128, power: float = 2.0, win_length: int | None = None,
                    window: str | Any = "hann", center: bool = True,
                    pad_mode: Literal["reflect", "constant", "replicate", "circular"] = "reflect",
                    fmin: float = 0.0, fmax: float | None = None,
                    norm: Literal["slaney"] | float | None = "slaney",
                    htk: bool = False) -> Tensor:
    """Mel spectrogram of ``x`` ``(..., samples)`` -> ``(..., n_mels, frames)``.

    ``mel_filterbank @ |stft(x)| ** power``. Equals ``librosa.feature.melspectrogram`` given the
    same arguments; note that librosa 0.11 pads with zeros by default while this (like
    :func:`stft` and torchaudio) reflects: pass ``pad_mode="constant"`` to match librosa's
    defaults. Only the first and last ``n_fft / (2 * hop_length)`` frames differ.
    """
    x = _as_tensor(x)
    spec = magnitude(stft(x, n_fft, hop_length, win_length, window, center, pad_mode), power)
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, norm, htk).to(spec.dtype).to(spec.device)
    return fb @ spec


# --------------------------------------------------------------------------- phase retrieval
def spectral_convergence(target_mag: Any, estimate_mag: Any) -> float:
    """``||T - E||_F / ||T||_F`` over all elements (0 is a perfect match).

    A silent target gives 0 when the estimate is silent too, else inf.
    """
    target = _as_tensor(target_mag, "target_mag")
    estimate = _as_tensor(estimate_mag, "estimate_mag").to(target.device)
    if target.shape != estimate.shape:
        raise LabkitError(f"target_mag has shape {tuple(target.shape)} but estimate_mag "
                          f"{tuple(estimate.shape)}; expected equal shapes")
    error = float(torch.linalg.vector_norm((target - estimate).double()))
    reference = float(torch.linalg.vector_norm(target.double()))
    if reference == 0:
        return 0.0 if error == 0 else math.inf
    return error / reference


def griffin_lim(mag: Any, n_iter: int = 32, n_fft: int | None = None,
                hop_length: int | None = None, win_length: int | None = None,
                window: str | Any = "hann", momentum: float = 0.99,
                init: Literal["random", "zeros"] | Any = "random", length: int | None = None,
                seed: int = 0, center: bool = True, return_history: bool = False,
                progress: bool = False) -> Tensor | tuple[Tensor, list[float]]:
    """Recover a waveform from a magnitude spectrogram ``(..., bins, frames)`` by fast Griffin-Lim.

    Alternates between the set of spectrograms with magnitude ``mag`` and the set of consistent
    spectrograms (STFTs of a signal), with Perraudin et al.'s (2013) momentum (0 gives the
    original Griffin & Lim 1984). ``n_fft`` defaults to ``2 * (bins - 1)``, ``hop_length`` to
    ``n_fft // 4``; STFT settings must match the ones that made ``mag``. ``init`` is
    ``"random"`` (uniform phases from ``seed``), ``"zeros"`` (zero phase) or a tensor of initial
    phases shaped like ``mag``. ``length`` (the length of the signal that made ``mag``) is used
    in every iteration, not only at the end, so that the edges are consistent; without it the
    signal has ``hop_length * (frames - 1)`` samples. Returns the waveform ``(..., samples)``;
    with ``return_history`` also the spectral convergence (over the whole batch) of the signal at
    each step: ``n_iter + 1`` values, the first for the initial phase and the last for the
    returned waveform.
    """
    from tqdm.auto import tqdm

    mag = _as_tensor(mag, "mag")
    if mag.is_complex():
        raise LabkitError("mag is complex; pass magnitude(X) (Griffin-Lim discards the phase)")
    if mag.ndim < 2:
        raise LabkitError(f"mag has shape {tuple(mag.shape)}; expected (..., bins, frames)")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise LabkitError(f"n_iter={n_iter!r}: expected a whole number >= 0")
    if not 0 <= momentum < 1:
        raise LabkitError(f"momentum={momentum!r}: expected 0 <= momentum < 1 (0.99 is usual)")
    n_fft = 2 * (mag.shape[-2] - 1) if n_fft is None else n_fft
    hop_length = n_fft // 4 if hop_length is None else hop_length
    settings = {"n_fft": n_fft, "hop_length": hop_length, "win_length": win_length,
                "window": window, "center": center}
    if mag.shape[-2] != n_fft // 2 + 1:
        raise LabkitError(f"mag has {mag.shape[-2]} bins but n_fft={n_fft} makes "
                          f"{n_fft // 2 + 1}; leave n_fft=None to infer it")
    if isinstance(init, str):
        if init == "random":
            generator = torch.Generator().manual_seed(seed)
            phases = 2 * math.pi * torch.rand(mag.shape, generator=generator, dtype=mag.dtype)
            angles = torch.polar(torch.ones_like(phases), phases).to(mag.device)
        elif init == "zeros":
            angles = torch.ones_like(mag, dtype=torch.complex128 if mag.dtype == torch.float64
                                     else torch.complex64)
        else:
            raise LabkitError(f"init={init!r}: use 'random', 'zeros' or a tensor of phases")
    else:
        phases = _as_tensor(init, "init").to(dtype=mag.dtype, device=mag.device)
        if phases.shape != mag.shape:
            raise LabkitError(f"init has shape {tuple(phases.shape)}; expected the shape of mag "
                              f"{tuple(mag.shape)}")
        angles = torch.polar(torch.ones_like(phases), phases)

    # Iterate on the signal length the caller wants: its STFT must have as many frames as mag.
    frames = mag.shape[-1]
    if length is not None:
        implied = 1 + length // hop_length if center else 1 + (length - n_fft) // hop_length
        if implied != frames:
            raise LabkitError(f"length={length} gives {implied} frames at hop_length={hop_length}, "
                              f"but mag has {frames}; leave length=None or pass the length of "
                              "the signal that made mag")
    history: list[float] = []
    previous = torch.zeros_like(angles)
    for _ in tqdm(range(n_iter), disable=not progress, desc="Griffin-Lim"):
        signal = istft(mag * angles, length=length, **settings)
        rebuilt = stft(signal, **settings)
        if return_history:
            history.append(spectral_convergence(mag, rebuilt.abs()))
        # Fast Griffin-Lim: t_n = c_n + a (c_n - c_{n-1}). Written as c_n - a/(1+a) c_{n-1}, a
        # multiple of the same thing: the division by |.| below removes the factor (1 + a).
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-16)  # silent bins stay 0 instead of NaN
        previous = rebuilt
    waveform = istft(mag * angles, length=length, **settings)
    if not return_history:
        return waveform
    history.append(spectral_convergence(mag, stft(waveform, **settings).abs()))
    return waveform, history
