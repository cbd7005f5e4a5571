"""Checks for the exercises of notebook 01 (STFT basics).

Each check calls the student's function on several inputs (odd lengths, batch dimensions, windows
other than Hann) and compares with a reference: :mod:`labkit.spectral` (torch, tested against
torch and librosa in ``tests/test_spectral.py``), NumPy or SciPy. Messages say what was wrong and
what was expected; a stub that raises or returns zeros fails with a specific message.
"""
from __future__ import annotations

import numpy as np
import torch

from labkit import spectral
from labkit.grading.registry import exercise, expect


# --------------------------------------------------------------------------- helpers
def _array(value: object, what: str) -> np.ndarray:
    """The student's result as a NumPy array (torch tensors are accepted too)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    expect(value is not None, f"{what} returned None; did you forget the return statement?")
    try:
        out = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything that is not array-like
        out = None
    expect(out is not None and out.dtype != object,
           f"{what} returned a {type(value).__name__}, expected a NumPy array")
    return out


def _shape(out: np.ndarray, expected: tuple[int, ...], what: str, hint: str = "") -> None:
    expect(out.shape == expected,
           f"{what} has shape {out.shape}, expected {expected}{hint}")


def _max_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(out - ref))) if ref.size else 0.0


def _close(out: np.ndarray, ref: np.ndarray, what: str, rtol: float = 1e-5,
           atol: float = 1e-8, hint: str = "") -> None:
    if np.allclose(out, ref, rtol=rtol, atol=atol):
        return
    if ref.size and not np.any(out) and np.any(ref):
        expect(False, f"{what} is all zeros, expected nonzero values{hint}")
    expect(False, f"{what} differs from the reference by up to {_max_error(out, ref):.3g} "
                  f"(largest reference value {float(np.max(np.abs(ref))):.3g}){hint}")


def _fmt(values: np.ndarray) -> str:
    return np.array2string(np.asarray(values), precision=3, separator=", ", threshold=12)


# --------------------------------------------------------------------------- 01.1 framing
@exercise("01.1", function="frame_signal", timeout=60)
def check_frame_signal(frame_signal):
    """Frames of a known signal, odd lengths, hops longer than the frame, batch dimensions."""
    x = np.arange(10.0)
    out = _array(frame_signal(x, 4, 2), "frame_signal(np.arange(10.0), 4, 2)")
    _shape(out, (4, 4), "frame_signal(np.arange(10.0), 4, 2)",
           " (n_frames = 1 + (10 - 4) // 2 = 4 frames of 4 samples)"
           + (": frames go in the second-to-last axis, samples in the last"
              if out.shape == (4, 4)[::-1] else ""))
    expected = np.array([[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]], dtype=float)
    for t in range(4):
        expect(np.array_equal(out[t], expected[t]),
               f"frame {t} of frame_signal(np.arange(10.0), 4, 2) is {_fmt(out[t])}, expected "
               f"{_fmt(expected[t])} (frame t starts at sample t * hop_length)")

    rng = np.random.default_rng(1)
    cases = [((1001,), 256, 100), ((257,), 256, 64), ((256,), 256, 64), ((50,), 4, 6),
             ((2, 3, 999), 128, 37), ((1, 31), 31, 1)]
    for shape, length, hop in cases:
        x = rng.standard_normal(shape)
        what = f"frame_signal(x of shape {shape}, frame_length={length}, hop_length={hop})"
        out = _array(frame_signal(x, length, hop), what)
        ref = spectral.frame(torch.from_numpy(x), length, hop).numpy()
        _shape(out, ref.shape, what,
               f" (n_frames = 1 + ({shape[-1]} - {length}) // {hop} = {ref.shape[-2]}; leading "
               "dimensions are kept)")
        _close(out, ref, what, rtol=0, atol=1e-12)

    x = np.arange(10.0)
    frame_signal(x, 4, 2)
    expect(np.array_equal(x, np.arange(10.0)), "frame_signal changed its input x; expected it "
                                               "to leave x as it was")
    try:
        frame_signal(np.zeros(3), 4, 2)
    except ValueError:
        pass
    except Exception as err:  # noqa: BLE001 - report which error it was
        expect(False, f"frame_signal(np.zeros(3), 4, 2) raised {type(err).__name__}, expected "
                      "ValueError (a signal shorter than one frame)")
    else:
        expect(False, "frame_signal(np.zeros(3), 4, 2) returned a result, expected it to raise "
                      "ValueError: 3 samples cannot fill a frame of 4")


# --------------------------------------------------------------------------- 01.2 Hann window
@exercise("01.2", function="hann_window", timeout=60)
def check_hann_window(hann_window):
    """Periodic and symmetric Hann windows against SciPy and torch, and the COLA property."""
    from scipy.signal import get_window

    for n in (16, 7, 2, 1024, 1025):
        for periodic in (True, False):
            what = f"hann_window({n}, periodic={periodic})"
            out = _array(hann_window(n, periodic=periodic), what)
            _shape(out, (n,), what)
            ref = get_window("hann", n, fftbins=periodic)
            if np.allclose(out, ref, atol=1e-6):
                continue
            other = get_window("hann", n, fftbins=not periodic)
            hint = ""
            if not np.any(out):
                hint = " -- it is all zeros"
            elif np.allclose(out, other, atol=1e-6):
                hint = (" -- you returned the " + ("symmetric" if periodic else "periodic")
                        + " window: periodic divides by n, symmetric by n - 1")
            elif np.allclose(out, 1 - ref, atol=1e-6):
                hint = " -- upside down: the window is 0.5 - 0.5 cos(...), 0 at k = 0"
            expect(False, f"{what} is {_fmt(out)}, expected {_fmt(ref)}{hint}")
    default = _array(hann_window(8), "hann_window(8)")
    expect(np.allclose(default, get_window("hann", 8, fftbins=True)),
           "hann_window(8) should give the periodic window by default (periodic=True)")
    torch_ref = torch.hann_window(512, periodic=True, dtype=torch.float64).numpy()
    _close(_array(hann_window(512), "hann_window(512)"), torch_ref, "hann_window(512)",
           rtol=0, atol=1e-6)
    # the periodic window is what makes hop n/2 overlap-add to a constant
    w = _array(hann_window(64), "hann_window(64)")
    total = w[:32] + w[32:]
    expect(np.allclose(total, 1.0, atol=1e-6),
           f"two halves of hann_window(64) sum to {_fmt(total)}, expected all ones")


# --------------------------------------------------------------------------- 01.3 STFT
def _reference_stft(x: np.ndarray, window: np.ndarray, hop: int) -> np.ndarray:
    n_fft = window.shape[-1]
    return spectral.stft(torch.from_numpy(x), n_fft, hop, window=torch.from_numpy(window),
                         center=False).numpy()


@exercise("01.3", function="stft_from_frames", timeout=60)
def check_stft_from_frames(stft_from_frames):
    """Shape (..., bins, frames), values against labkit.spectral.stft(center=False)."""
    rng = np.random.default_rng(3)
    hann = spectral.get_window("hann", 16, dtype=torch.float64).numpy()
    x = rng.standard_normal(40)
    what = "stft_from_frames(x of 40 samples, Hann window of 16, hop_length=8)"
    out = _array(stft_from_frames(x, hann, 8), what)
    ref = _reference_stft(x, hann, 8)
    hint = ""
    if out.shape == ref.shape[::-1]:
        hint = " -- frequency bins go in axis -2 and frames in axis -1: transpose the last two"
    elif out.shape[-2:] == (16, ref.shape[-1]) or out.shape[-2:] == (ref.shape[-1], 16):
        hint = " -- a real signal needs only n_fft // 2 + 1 bins: use np.fft.rfft"
    _shape(out, ref.shape, what, hint)
    expect(np.iscomplexobj(out), f"{what} is real, expected a complex spectrogram")
    if np.allclose(np.abs(out), np.abs(_reference_stft(x, np.ones(16), 8)), atol=1e-6):
        expect(False, f"{what} equals the STFT with a rectangular window: multiply each frame "
                      "by the window before the FFT")
    _close(out, ref, what, rtol=1e-6, atol=1e-8)

    cases = [((1000,), "hann", 256, 64), ((999,), "hamming", 255, 100),
             ((2, 3, 777), "blackman", 64, 16), ((513,), "random", 128, 128)]
    for shape, name, n_fft, hop in cases:
        x = rng.standard_normal(shape)
        window = (rng.uniform(0.2, 1.0, n_fft) if name == "random"
                  else spectral.get_window(name, n_fft, dtype=torch.float64).numpy())
        what = (f"stft_from_frames(x of shape {shape}, a {name} window of {n_fft}, "
                f"hop_length={hop})")
        out = _array(stft_from_frames(x, window, hop), what)
        ref = _reference_stft(x, window, hop)
        _shape(out, ref.shape, what, f" (bins = {n_fft} // 2 + 1, frames = 1 + ({shape[-1]} - "
                                     f"{n_fft}) // {hop}, leading dimensions kept)")
        _close(out, ref, what, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- 01.4 ISTFT
def _reference_istft(X: np.ndarray, window: np.ndarray, hop: int,
                     length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted overlap-add divided by the summed squared window; also returns that envelope."""
    n_fft = window.shape[-1]
    frames = np.fft.irfft(X, n=n_fft, axis=-2) * window[:, None]
    n_frames = X.shape[-1]
    total = n_fft + hop * (n_frames - 1)
    y = np.zeros((*X.shape[:-2], total))
    env = np.zeros(total)
    for t in range(n_frames):
        y[..., t * hop:t * hop + n_fft] += frames[..., t]
        env[t * hop:t * hop + n_fft] += window**2
    y = np.divide(y, env, out=np.zeros_like(y), where=env > 1e-10)
    if length is not None:
        y = y[..., :length] if length <= total else np.pad(
            y, [(0, 0)] * (y.ndim - 1) + [(0, length - total)])
        env = env[:length] if length <= total else np.pad(env, (0, length - total))
    return y, env


@exercise("01.4", function="istft_overlap_add", timeout=60)
def check_istft_overlap_add(istft_overlap_add):
    """Perfect reconstruction, the squared-window normalisation, batches and ``length``."""
    rng = np.random.default_rng(4)
    hann = spectral.get_window("hann", 256, dtype=torch.float64).numpy()
    x = rng.standard_normal(2000)
    X = _reference_stft(x, hann, 64)
    what = "istft_overlap_add(X, Hann window of 256, hop_length=64) for X = the STFT of x"
    y = _array(istft_overlap_add(X, hann, 64), what)
    total = 256 + 64 * (X.shape[-1] - 1)
    _shape(y, (total,), what, f" (n_fft + hop_length * (frames - 1) = {total} samples)")
    expect(np.all(np.isfinite(y)), f"{what} holds NaN or inf: where the summed squared window is "
                                   "0 (the first sample, under a Hann window), do not divide")
    expect(np.iscomplexobj(y) is False or np.allclose(np.imag(y), 0),
           f"{what} is complex; expected a real signal (use np.fft.irfft)")
    y = np.real(y)
    _, env = _reference_istft(X, hann, 64)
    inside = env > 1e-3 * env.max()  # samples that enough window energy covers
    if not np.allclose(y[inside], x[:total][inside], atol=1e-6):
        target = x[:total][inside]
        scale = float(np.dot(y[inside], target) / np.dot(target, target))
        hint = ""
        middle = np.isclose(env, env.max(), rtol=1e-9)  # where the envelope is flat
        if abs(scale - 1) > 0.05 and np.allclose(y[inside], scale * target, atol=1e-3):
            hint = (f" -- the output is {scale:.3g} times the input: divide by the sum of the "
                    "squared, shifted windows")
        elif np.allclose(y[middle], x[:total][middle], atol=1e-6):
            hint = (" -- right in the middle, wrong near the ends, where fewer frames overlap: "
                    "divide sample by sample by the summed squared windows, not by one number")
        expect(False, f"{what} does not give x back: off by up to "
                      f"{_max_error(y[inside], target):.3g}{hint}")

    # a hop at which the squared window does not sum to a constant: only dividing by the
    # envelope (not by a number) reconstructs
    X = _reference_stft(x, hann, 96)
    what = "istft_overlap_add(X, Hann window of 256, hop_length=96) for X = the STFT of x"
    y = np.real(_array(istft_overlap_add(X, hann, 96), what))
    _, env = _reference_istft(X, hann, 96)
    total = env.size
    inside = env > 1e-3 * env.max()
    expect(y.shape == (total,) and np.allclose(y[inside], x[:total][inside], atol=1e-6),
           f"{what} does not give x back (at this hop the squared windows do not sum to a "
           "constant: divide sample by sample by their sum, not by one number)")

    # arbitrary spectrograms, other windows, batch dimensions, length
    cases = [((2, 3, 65, 20), "hamming", 16, None), ((129, 9), "blackman", 32, 500),
             ((65, 7), "random", 64, None), ((33, 12), "hann", 8, 90)]
    for shape, name, hop, length in cases:
        n_fft = 2 * (shape[-2] - 1)
        X = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        X[..., 0, :] = X[..., 0, :].real  # DC and Nyquist of a real signal are real
        X[..., -1, :] = X[..., -1, :].real
        window = (rng.uniform(0.2, 1.0, n_fft) if name == "random"
                  else spectral.get_window(name, n_fft, dtype=torch.float64).numpy())
        what = (f"istft_overlap_add(X of shape {shape}, a {name} window of {n_fft}, "
                f"hop_length={hop}, length={length})")
        y = _array(istft_overlap_add(X, window, hop, length=length), what)
        ref, env = _reference_istft(X, window, hop, length)
        _shape(y, ref.shape, what, "" if length is None else
               f" (length={length} trims or zero-pads the output to that many samples)")
        inside = env > 1e-3 * env.max()
        _close(np.real(y)[..., inside], ref[..., inside], what, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- 01.5 mel filters
@exercise("01.5", function=("hz_to_mel", "mel_filters"), timeout=60)
def check_mel_filters(hz_to_mel, mel_filters):
    """HTK mel scale and triangular filters (peak 1) against labkit.spectral.mel_filterbank."""
    for f in (0.0, 700.0, 1000.0, 8000.0):
        out = float(np.asarray(hz_to_mel(f)))
        ref = spectral.hz_to_mel(f, htk=True)
        expect(abs(out - ref) < 1e-4 * max(1.0, ref),
               f"hz_to_mel({f}) is {out:.6g}, expected {ref:.6g} = 2595 log10(1 + f / 700)")
    freqs = np.array([50.0, 440.0, 3000.0])
    out = _array(hz_to_mel(freqs), "hz_to_mel(np.array([50, 440, 3000]))")
    _close(out, spectral.hz_to_mel(freqs, htk=True), "hz_to_mel(np.array([50, 440, 3000]))",
           rtol=1e-4, hint=" (it should work element-wise on arrays)")

    cases = [(16000, 512, 40, 0.0, None), (22050, 2048, 128, 20.0, 8000.0),
             (8000, 255, 10, 100.0, 3800.0)]
    for sr, n_fft, n_mels, fmin, fmax in cases:
        what = (f"mel_filters(sr={sr}, n_fft={n_fft}, n_mels={n_mels}, fmin={fmin}, "
                f"fmax={fmax})")
        out = _array(mel_filters(sr, n_fft, n_mels, fmin=fmin, fmax=fmax), what)
        ref = spectral.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, norm=None,
                                      htk=True).numpy().astype(np.float64)
        hint = ""
        if out.shape == ref.shape[::-1]:
            hint = " -- one row per mel filter, one column per FFT bin: transpose it"
        _shape(out, ref.shape, what, hint or " (n_mels, n_fft // 2 + 1)")
        expect(np.all(out >= -1e-12), f"{what} has negative weights; expected triangles that "
                                      "are 0 outside their band (clip at 0)")
        if not np.allclose(out, ref, atol=1e-5):
            row = int(np.argmax(np.max(np.abs(out - ref), axis=1)))
            peak = int(np.argmax(ref[row]))
            full = ref.max(axis=1) > 0.99  # filters that reach an FFT bin at their peak
            hint = ""
            if np.any(out) and not np.allclose(out.max(axis=1)[full], 1.0, atol=1e-3):
                hint = " (each triangle should peak at 1: no normalisation)"
            expect(False, f"{what}: filter {row} differs by up to "
                          f"{np.max(np.abs(out[row] - ref[row])):.3g}; around its peak (bin "
                          f"{peak}) it is {_fmt(out[row, max(0, peak - 2):peak + 3])}, expected "
                          f"{_fmt(ref[row, max(0, peak - 2):peak + 3])}{hint}")


# --------------------------------------------------------------------------- 01.6 Griffin-Lim
def _reference_step(mag: torch.Tensor, angles: torch.Tensor, n_fft: int, hop: int):
    frames = mag.shape[-1]
    signal = spectral.istft(spectral.polar(mag, angles), n_fft, hop, length=hop * (frames - 1))
    return spectral.stft(signal, n_fft, hop)


@exercise("01.6", function="griffin_lim_step", timeout=60)
def check_griffin_lim_step(griffin_lim_step):
    """One projection pair (impose magnitude, make consistent) against labkit.spectral."""
    from labkit.signals import harmonic_tone

    g = torch.Generator().manual_seed(6)
    sr, n_fft, hop = 8000, 256, 64
    tone = torch.from_numpy(harmonic_tone(220.0, 0.5, sr, n_harmonics=8).astype(np.float64))
    mag = spectral.magnitude(spectral.stft(tone, n_fft, hop))
    angles = 2 * torch.pi * torch.rand(mag.shape, generator=g, dtype=torch.float64)
    what = "griffin_lim_step(mag, phase, n_fft=256, hop_length=64)"
    out = griffin_lim_step(mag, angles, n_fft, hop)
    out = torch.as_tensor(_array(out, what))
    _shape(out.numpy(), tuple(mag.shape), what,
           " (the new phase has the shape of mag)")
    expect(not torch.is_complex(out), f"{what} is complex; expected the phase in radians "
                                      "(use labkit.spectral.phase or torch.angle)")
    rebuilt = _reference_step(mag, angles, n_fft, hop)
    strong = rebuilt.abs() > 1e-6 * rebuilt.abs().max()  # the phase of ~0 is meaningless
    # compare unit phasors, so that 3.14 and -3.14 count as the same angle
    err = (torch.polar(torch.ones_like(out), out.to(torch.float64))
           - torch.polar(torch.ones_like(out), rebuilt.angle()))[strong].abs()
    if err.max() > 1e-4:
        same_as_input = torch.allclose(torch.polar(torch.ones_like(out), out.to(torch.float64)),
                                       torch.polar(torch.ones_like(angles), angles), atol=1e-6)
        hint = " -- it returns the phase it was given" if same_as_input else ""
        hint += (": the new phase is the phase of stft(istft(mag * exp(i phase))) with "
                 "labkit.spectral's default Hann window and centred frames")
        expect(False, f"{what} differs from one Griffin-Lim iteration: phases off by up to "
                      f"{float(err.max()):.3g} (as unit phasors){hint}")

    # it must work on batches (batch, channels, bins, frames) and improve the estimate
    batch_mag = torch.stack([mag, 0.5 * mag]).unsqueeze(1)
    phase = 2 * torch.pi * torch.rand(batch_mag.shape, generator=g, dtype=torch.float64)
    before = spectral.spectral_convergence(
        batch_mag, _reference_step(batch_mag, phase, n_fft, hop).abs())
    for _ in range(10):
        phase = torch.as_tensor(_array(griffin_lim_step(batch_mag, phase, n_fft, hop),
                                       "griffin_lim_step on a batch (2, 1, bins, frames)"))
        expect(tuple(phase.shape) == tuple(batch_mag.shape),
               f"griffin_lim_step on mag of shape {tuple(batch_mag.shape)} returned shape "
               f"{tuple(phase.shape)}; expected the same shape (keep the batch dimensions)")
    after = spectral.spectral_convergence(
        batch_mag, _reference_step(batch_mag, phase.to(torch.float64), n_fft, hop).abs())
    expect(after < 0.8 * before,
           f"10 steps of griffin_lim_step took the spectral convergence from {before:.3f} to "
           f"{after:.3f}; expected it to fall clearly")
