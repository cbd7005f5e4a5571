"""Signal-processing building blocks of the toy synthesiser (NumPy/SciPy, vectorised).

Signals are float32 ``(samples,)`` unless said otherwise; frequencies in Hz, times in seconds.
Phases are accumulated in float64 (20 s of a 5 kHz partial is 10^5 cycles) and wrapped before
the float32 sine, which keeps oscillators both exact and fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.signal

TWO_PI = 2.0 * np.pi


def midi_to_hz(midi: float | np.ndarray) -> float | np.ndarray:
    """Frequency of MIDI note number(s) ``midi`` (69 = A4 = 440 Hz); fractional numbers allowed."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    """Amplitude factor of ``db`` decibels."""
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 20.0)


def below_nyquist(freq: float, sr: int, fraction: float = 0.45) -> float:
    """``freq`` clipped to ``fraction`` of the sample rate, so filters stay valid at any rate."""
    return float(min(freq, fraction * sr))


# --------------------------------------------------------------------------- oscillators
def cycles(freq: float | np.ndarray, n: int, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Running phase in cycles (float64, ``(n,)``) of an oscillator at ``freq`` (scalar or ``(n,)``)."""
    if np.ndim(freq) == 0:
        return phase0 + np.arange(n, dtype=np.float64) * (float(freq) / sr)
    inc = np.asarray(freq, dtype=np.float64) / sr
    out = np.cumsum(inc)
    out -= inc[0]
    return out + phase0


def sine_from_cycles(cyc: np.ndarray, multiple: float = 1.0) -> np.ndarray:
    """``sin(2 pi multiple cyc)`` in float32, wrapping the phase first to keep precision."""
    ph = cyc * multiple if multiple != 1.0 else cyc
    return np.sin((TWO_PI * (ph - np.floor(ph))).astype(np.float32))


def sine(freq: float | np.ndarray, n: int, sr: int, phase0: float = 0.0) -> np.ndarray:
    """A sine of ``n`` samples at ``freq`` (scalar or per-sample ``(n,)``)."""
    return sine_from_cycles(cycles(freq, n, sr, phase0))


_TABLE_SIZE = 4096


@lru_cache(maxsize=256)
def _wavetable(shape: str, harmonics: int) -> np.ndarray:
    """One period (plus a wrap-around sample) of a band-limited ``shape`` ("saw", "square")."""
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    k = np.arange(1, min(harmonics, _TABLE_SIZE // 2 - 1) + 1)
    if shape == "square":
        k = k[k % 2 == 1]
    # sin(2 pi k x) / k: imaginary spectrum; the square's odd partials are twice as strong.
    spectrum[k] = -1j / k * (2.0 if shape == "square" else 1.0)
    table = np.fft.irfft(spectrum, _TABLE_SIZE) * (_TABLE_SIZE / np.pi)
    table = np.append(table, table[0]).astype(np.float32)
    table.setflags(write=False)
    return table


def wavetable(cyc: np.ndarray, shape: str, top_freq: float, sr: int,
              limit: float | None = None) -> np.ndarray:
    """A band-limited ``shape`` ("saw" or "square", amplitude about 1) from a running phase.

    ``top_freq`` is the highest fundamental the phase reaches: harmonics stop below
    ``min(limit, 0.45 sr)`` for it, so there is no aliasing anywhere in the note. A table lookup
    with linear interpolation: about six times faster than PolyBLEP.
    """
    ceiling = 0.45 * sr if limit is None else min(limit, 0.45 * sr)
    harmonics = int(np.clip(ceiling // max(top_freq, 1.0), 1, _TABLE_SIZE // 2 - 1))
    table = _wavetable(shape, harmonics)
    pos = (cyc - np.floor(cyc)) * _TABLE_SIZE
    i = pos.astype(np.int32)
    frac = (pos - i).astype(np.float32)
    lo = table[i]
    return lo + (table[i + 1] - lo) * frac


def saw(freq: float | np.ndarray, n: int, sr: int, phase0: float = 0.0,
        limit: float | None = None) -> np.ndarray:
    """A band-limited sawtooth of ``n`` samples at ``freq`` (scalar or ``(n,)``)."""
    return wavetable(cycles(freq, n, sr, phase0), "saw", float(np.max(freq)), sr, limit)


def pulse(freq: float | np.ndarray, n: int, sr: int, duty: float = 0.5, phase0: float = 0.0,
          limit: float | None = None) -> np.ndarray:
    """A band-limited pulse wave (difference of two sawtooths), ``duty`` in (0, 1), zero mean."""
    cyc = cycles(freq, n, sr, phase0)
    top = float(np.max(freq))
    out = wavetable(cyc, "saw", top, sr, limit) - wavetable(cyc + duty, "saw", top, sr, limit)
    return (out - out.mean()).astype(np.float32)


def harmonic_sum(cyc: np.ndarray, amplitudes: np.ndarray, ratios: np.ndarray,
                 phases: np.ndarray | None = None) -> np.ndarray:
    """Additive synthesis: ``sum_k a_k sin(2 pi (r_k cyc + phi_k))``.

    ``cyc``: running phase ``(n,)``; ``amplitudes``: ``(K,)`` constants or ``(K, n)`` envelopes;
    ``ratios``: ``(K,)`` frequency multiples (inharmonic allowed); ``phases``: ``(K,)`` in cycles.
    """
    out = np.zeros(cyc.shape[0], dtype=np.float32)
    for k, ratio in enumerate(ratios):
        ph = cyc * ratio
        if phases is not None:
            ph = ph + phases[k]
        out += np.sin((TWO_PI * (ph - np.floor(ph))).astype(np.float32)) * amplitudes[k]
    return out


# --------------------------------------------------------------------------- envelopes
def exp_decay(n: int, sr: int, tau: float) -> np.ndarray:
    """``exp(-t / tau)`` for ``n`` samples."""
    return np.exp(-np.arange(n, dtype=np.float32) / np.float32(max(tau, 1e-4) * sr))


def adsr(n: int, sr: int, attack: float, decay: float, sustain: float, release: float,
         gate: float) -> np.ndarray:
    """An attack-decay-sustain-release envelope of ``n`` samples; the key is held for ``gate`` s.

    Attack is linear, decay and release are exponential (``decay``/``release`` are time constants).
    """
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    attack = max(attack, 1.0 / sr)
    env = np.where(t < attack, t / attack,
                   sustain + (1.0 - sustain) * np.exp(-(t - attack) / max(decay, 1e-4)))
    level_at_gate = (gate / attack if gate < attack else
                     sustain + (1.0 - sustain) * np.exp(-(gate - attack) / max(decay, 1e-4)))
    after = t >= gate
    env[after] = level_at_gate * np.exp(-(t[after] - gate) / max(release, 1e-4))
    return env.astype(np.float32)


def fade(x: np.ndarray, sr: int, fade_in: float = 0.002, fade_out: float = 0.005) -> np.ndarray:
    """``x`` with short raised-cosine fades at both ends, in place; removes clicks at cuts."""
    for length, rev in ((int(fade_in * sr), False), (int(fade_out * sr), True)):
        length = min(length, x.shape[-1])
        if length < 2:
            continue
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length))).astype(np.float32)
        if rev:
            x[..., -length:] *= ramp[::-1]
        else:
            x[..., :length] *= ramp
    return x


def smooth_noise(rng: np.random.Generator, n: int, sr: int, rate: float) -> np.ndarray:
    """Slowly wandering noise ``(n,)`` with unit standard deviation and changes at about ``rate`` Hz.

    Used for drifts (pitch, level, vibrato rate): random points every ``1 / rate`` seconds joined by
    straight lines.
    """
    step = max(int(sr / max(rate, 1e-3)), 1)
    points = rng.standard_normal(n // step + 2).astype(np.float32)
    return np.interp(np.arange(n, dtype=np.float32) / np.float32(step),
                     np.arange(points.size, dtype=np.float32), points).astype(np.float32)


# --------------------------------------------------------------------------- filters
def butter(kind: str, freq: float | tuple[float, float], sr: int, order: int = 2) -> np.ndarray:
    """Second-order sections of a Butterworth ``kind`` filter ("lowpass", "highpass", "bandpass").

    Cut-offs are clipped below Nyquist so the same recipe works at every sample rate. Designs are
    cached (the same drum or consonant filter is asked for many times in a track).
    """
    freq = (float(freq[0]), float(freq[1])) if kind == "bandpass" else float(freq)
    return _butter(kind, freq, int(sr), int(order))


@lru_cache(maxsize=1024)
def _butter(kind: str, freq, sr: int, order: int) -> np.ndarray:
    if kind == "bandpass":
        lo, hi = freq
        hi = below_nyquist(hi, sr)
        lo = min(lo, 0.9 * hi)
        return scipy.signal.butter(order, (lo, hi), btype="bandpass", fs=sr, output="sos")
    return scipy.signal.butter(order, below_nyquist(float(freq), sr), btype=kind, fs=sr,
                               output="sos")


def peaking(freq: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """One second-order section: an RBJ peaking EQ at ``freq`` with ``gain_db`` and quality ``q``."""
    freq = below_nyquist(freq, sr)
    a = 10 ** (gain_db / 40)
    w0 = TWO_PI * freq / sr
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
    return np.array([[b[0] / den[0], b[1] / den[0], b[2] / den[0], 1.0,
                      den[1] / den[0], den[2] / den[0]]])


def shelf(kind: str, freq: float, gain_db: float, sr: int) -> np.ndarray:
    """One second-order section: an RBJ ``kind`` ("low" or "high") shelf, slope 1."""
    freq = below_nyquist(freq, sr)
    a = 10 ** (gain_db / 40)
    w0 = TWO_PI * freq / sr
    cw, alpha = np.cos(w0), np.sin(w0) / 2 * np.sqrt(2)
    sa = 2 * np.sqrt(a) * alpha
    if kind == "low":
        b = [a * ((a + 1) - (a - 1) * cw + sa), 2 * a * ((a - 1) - (a + 1) * cw),
             a * ((a + 1) - (a - 1) * cw - sa)]
        den = [(a + 1) + (a - 1) * cw + sa, -2 * ((a - 1) + (a + 1) * cw),
               (a + 1) + (a - 1) * cw - sa]
    else:
        b = [a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw),
             a * ((a + 1) + (a - 1) * cw - sa)]
        den = [(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw),
               (a + 1) - (a - 1) * cw - sa]
    return np.array([[b[0] / den[0], b[1] / den[0], b[2] / den[0], 1.0,
                      den[1] / den[0], den[2] / den[0]]])


def filt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply second-order sections along the last axis; float32 out."""
    return scipy.signal.sosfilt(sos, x, axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- noise
def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White Gaussian noise ``(n,)`` float32."""
    return rng.standard_normal(n, dtype=np.float32)


# --------------------------------------------------------------------------- STFT filtering
def stft_frame_size(sr: int, seconds: float = 0.023) -> int:
    """A power-of-two FFT size close to ``seconds`` at ``sr`` (1024 at 44.1 kHz)."""
    return int(2 ** round(np.log2(max(sr * seconds, 64))))


def stft_filter(x: np.ndarray, gains: np.ndarray, n_fft: int) -> np.ndarray:
    """Filter ``x`` ``(n,)`` with a time-varying magnitude response, frame by frame.

    ``gains``: ``(frames, n_fft // 2 + 1)`` with ``frames = n // hop + 1`` and ``hop = n_fft // 4``;
    frame ``f`` is centred on sample ``f * hop``. Hann analysis and synthesis windows with weighted
    overlap-add: a constant gain of 1 returns ``x``. Smooth responses (formants, tilts) only: a
    response sharper than the window resolves would smear in time.
    """
    hop = n_fft // 4
    n = x.shape[0]
    frames = n // hop + 1
    if gains.shape != (frames, n_fft // 2 + 1):
        raise ValueError(f"gains has shape {gains.shape}, expected {(frames, n_fft // 2 + 1)}")
    pad = n_fft // 2
    total = (frames + 3) * hop
    xp = np.zeros(total + n_fft, dtype=np.float32)
    xp[pad:pad + n] = x
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    framed = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:frames] * window
    spec = scipy.fft.rfft(framed, axis=-1)
    spec *= gains
    out = scipy.fft.irfft(spec, n_fft, axis=-1).astype(np.float32) * window
    blocks = np.zeros((frames + 3, hop), dtype=np.float32)
    out = out.reshape(frames, 4, hop)
    for j in range(4):
        blocks[j:j + frames] += out[:, j]
    y = blocks.reshape(-1)[pad:pad + n]
    # Sum of squared periodic Hann windows at 75 % overlap is 1.5 everywhere.
    return y / np.float32(1.5)


def frame_times(n: int, sr: int, n_fft: int) -> np.ndarray:
    """Centre times in seconds of the frames :func:`stft_filter` uses for ``n`` samples."""
    hop = n_fft // 4
    return np.arange(n // hop + 1) * hop / sr


def resonance(freqs: np.ndarray, centre: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """Magnitude of a second-order resonator, 1 at DC (Klatt's cascade formant), broadcasting."""
    c2 = centre * centre
    return c2 / np.sqrt((c2 - freqs * freqs) ** 2 + (freqs * bandwidth) ** 2)


def peak_response(freqs: np.ndarray, centre: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """A resonance peak normalised to 1 at its centre (for parallel formant sums), broadcasting."""
    return 1.0 / np.sqrt(1.0 + ((freqs * freqs - centre * centre) / (freqs * bandwidth + 1e-9)) ** 2)


# --------------------------------------------------------------------------- space
@dataclass
class Room:
    """A synthetic reverb: the parameters and its impulse responses ``(channels, length)``."""

    rt60: float
    predelay: float
    damping: float
    ir: np.ndarray

    def meta(self) -> dict:
        """JSON-ready parameters."""
        return {"rt60": round(self.rt60, 3), "predelay": round(self.predelay, 4),
                "damping_hz": round(self.damping, 1)}


def make_room(rng: np.random.Generator, sr: int, channels: int, rt60: float, predelay: float,
              damping: float) -> Room:
    """A reverb impulse response: early reflections and an exponentially decaying noise tail.

    High frequencies decay faster (``damping`` Hz is where the tail's decay time halves), as in
    real rooms; the two channels use independent noise, so the tail is decorrelated (wide).
    """
    length = int(min(rt60 * 1.1, 3.0) * sr) + int(predelay * sr)
    t = np.arange(length, dtype=np.float32) / sr
    irs = []
    for _ in range(channels):
        bands = []
        # Three bands with their own decay: lows ring longest, highs die first.
        for sos, scale in ((butter("lowpass", 500.0, sr), 1.2),
                           (butter("bandpass", (500.0, damping), sr), 1.0),
                           (butter("highpass", damping, sr), 0.45)):
            band = filt(sos, noise(rng, length)) * np.exp(-6.9 * t / (rt60 * scale))
            bands.append(band)
        tail = np.sum(bands, axis=0)
        tail[: int(predelay * sr)] = 0.0
        onset = int(predelay * sr)
        ramp = min(int(0.01 * sr), length - onset)
        tail[onset:onset + ramp] *= np.linspace(0, 1, ramp, dtype=np.float32)
        for _ in range(6):
            pos = onset + int(rng.uniform(0.001, 0.04) * sr)
            if pos < length:
                tail[pos] += rng.uniform(-1.0, 1.0) * 3.0
        irs.append(tail)
    ir = np.stack(irs).astype(np.float32)
    ir /= np.sqrt((ir ** 2).sum(axis=1, keepdims=True)) + 1e-12
    return Room(rt60=rt60, predelay=predelay, damping=damping, ir=ir)


def convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``x`` ``(n,)`` convolved with each row of ``ir`` ``(channels, length)``, cut to ``n`` samples.

    Returns ``(channels, n)``. FFT convolution: one forward transform of ``x`` serves all channels.
    """
    n = x.shape[-1]
    size = scipy.fft.next_fast_len(n + ir.shape[-1] - 1, real=True)
    spec = scipy.fft.rfft(x.astype(np.float32), size)
    out = scipy.fft.irfft(spec[None] * scipy.fft.rfft(ir.astype(np.float32), size, axis=-1),
                          size, axis=-1)
    return out[:, :n].astype(np.float32)


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power gains (left, right) for ``pan`` in [-1 (left), 1 (right)]."""
    angle = (np.clip(pan, -1.0, 1.0) + 1.0) * np.pi / 4.0
    return float(np.cos(angle) * np.sqrt(2.0)), float(np.sin(angle) * np.sqrt(2.0))


def add_at(buffer: np.ndarray, signal: np.ndarray, start: int) -> None:
    """Add ``signal`` into ``buffer`` (last axis) at sample ``start``, cropping at both ends."""
    n = buffer.shape[-1]
    if start >= n or start + signal.shape[-1] <= 0:
        return
    lo = max(start, 0)
    hi = min(start + signal.shape[-1], n)
    buffer[..., lo:hi] += signal[..., lo - start:hi - start]
