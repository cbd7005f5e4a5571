"""Deterministic test signals: the sounds the course analyses before it touches real recordings.

Everything here is plain NumPy, offline and repeatable: the same arguments (and ``seed``) always
give the same samples. Two shape conventions, on purpose:

- the *building blocks* (:func:`sine`, :func:`chirp`, :func:`harmonic_tone`, :func:`chord`,
  :func:`click_train`, :func:`noise_burst`, :func:`vowel`) return one float32 signal of shape
  ``(samples,)``, the easiest thing to plot, frame and transform;
- the *example clips* (:func:`speech_like`, :func:`music_like`) return float32 audio
  ``(channels, samples)``, the course-wide audio contract, like :func:`labkit.audio.load`.

Durations are in seconds, frequencies in Hz, ``sr`` is the sample rate in Hz. Bad arguments
raise :class:`labkit.LabkitError` (a ``ValueError``) naming the value and what is accepted.
Every signal stays inside [-1, 1]; the example clips are peak-normalised to ``peak``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labkit.errors import LabkitError

#: Formant frequencies (F1, F2, F3) in Hz of five vowels of an adult male voice
#: (Peterson & Barney, 1952, rounded).
VOWEL_FORMANTS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}

#: Formant bandwidths (B1, B2, B3) in Hz used by :func:`vowel` unless told otherwise.
FORMANT_BANDWIDTHS: tuple[float, float, float] = (80.0, 100.0, 140.0)


# --------------------------------------------------------------------------- validation helpers
def _num_samples(duration: float, sr: int) -> int:
    if sr <= 0:
        raise LabkitError(f"sr={sr!r}: the sample rate must be a positive number of Hz")
    if not duration > 0:
        raise LabkitError(f"duration={duration!r}: must be a positive number of seconds")
    return round(duration * sr)


def _check_frequency(name: str, freq: float, sr: int) -> None:
    if not 0 <= freq <= sr / 2:
        raise LabkitError(
            f"{name}={freq!r} Hz: must lie in [0, sr/2] = [0, {sr / 2:g}] Hz to avoid aliasing"
        )


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _finish(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- envelopes
def fade(signal: np.ndarray, sr: int, fade_in: float = 0.01, fade_out: float = 0.01) -> np.ndarray:
    """Raised-cosine fade-in and fade-out (seconds) on the last axis of ``signal`` (..., samples).

    Fades keep a signal that starts or stops abruptly from adding a click (a broadband transient)
    that would show up in every spectrogram. Returns a float32 copy.
    """
    out = np.array(signal, dtype=np.float64, copy=True)
    n = out.shape[-1]
    for seconds, ramp_at_start in ((fade_in, True), (fade_out, False)):
        k = min(round(seconds * sr), n)
        if k <= 0:
            continue
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
        if ramp_at_start:
            out[..., :k] *= ramp
        else:
            out[..., n - k:] *= ramp[::-1]
    return _finish(out)


def adsr(n: int, sr: int, attack: float = 0.01, decay: float = 0.1, sustain: float = 0.7,
         release: float = 0.1) -> np.ndarray:
    """An attack-decay-sustain-release amplitude envelope of ``n`` samples, shape ``(n,)``.

    Times in seconds; ``sustain`` is the level (0..1) held between decay and release. Segments are
    shortened proportionally when they do not fit into ``n`` samples.
    """
    if not 0 <= sustain <= 1:
        raise LabkitError(f"sustain={sustain!r}: must be a level in [0, 1]")
    lengths = np.array([attack, decay, release], dtype=np.float64) * sr
    if lengths.sum() > n:
        lengths *= n / lengths.sum()
    a, d, r = (int(v) for v in lengths)
    s = n - a - d - r
    env = np.concatenate([
        np.linspace(0.0, 1.0, a, endpoint=False),
        np.linspace(1.0, sustain, d, endpoint=False),
        np.full(s, sustain),
        np.linspace(sustain, 0.0, r),
    ])
    return _finish(env)


# --------------------------------------------------------------------------- building blocks
def sine(freq: float, duration: float, sr: int = 22050, amplitude: float = 0.5,
         phase: float = 0.0) -> np.ndarray:
    """A sinusoid ``amplitude * sin(2π freq t + phase)``, shape ``(samples,)`` float32."""
    n = _num_samples(duration, sr)
    _check_frequency("freq", freq, sr)
    return _finish(amplitude * np.sin(2 * np.pi * freq * _time(n, sr) + phase))


def chirp(f0: float, f1: float, duration: float, sr: int = 22050, amplitude: float = 0.5,
          method: str = "linear") -> np.ndarray:
    """A sweep from ``f0`` to ``f1`` Hz over ``duration`` s, shape ``(samples,)`` float32.

    ``method="linear"`` moves the instantaneous frequency at a constant rate in Hz/s;
    ``method="log"`` (exponential sweep) at a constant rate in octaves/s and needs f0, f1 > 0.
    The instantaneous frequency at time t is ``chirp_frequency(t, f0, f1, duration, method)``.
    """
    n = _num_samples(duration, sr)
    _check_frequency("f0", f0, sr)
    _check_frequency("f1", f1, sr)
    t = _time(n, sr)
    if method == "linear":
        # phase = 2π ∫ f(τ) dτ with f linear in τ
        phi = 2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / duration * t**2)
    elif method == "log":
        if f0 <= 0 or f1 <= 0:
            raise LabkitError(f"f0={f0!r}, f1={f1!r}: an exponential sweep needs both above 0 Hz")
        if f0 == f1:
            phi = 2 * np.pi * f0 * t
        else:
            k = np.log(f1 / f0) / duration
            phi = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    else:
        raise LabkitError(f"method={method!r}: use 'linear' or 'log'")
    return _finish(amplitude * np.sin(phi))


def chirp_frequency(t: np.ndarray | float, f0: float, f1: float, duration: float,
                    method: str = "linear") -> np.ndarray:
    """The instantaneous frequency (Hz) of :func:`chirp` at time(s) ``t`` (seconds)."""
    t = np.asarray(t, dtype=np.float64)
    if method == "linear":
        return f0 + (f1 - f0) * t / duration
    if method == "log":
        return f0 * (f1 / f0) ** (t / duration)
    raise LabkitError(f"method={method!r}: use 'linear' or 'log'")


def harmonic_tone(f0: float, duration: float, sr: int = 22050, n_harmonics: int = 10,
                  rolloff: float = 1.0, amplitude: float = 0.5,
                  envelope: np.ndarray | None = None) -> np.ndarray:
    """A periodic tone: harmonics ``k·f0`` (k = 1..n_harmonics) with amplitudes ``k**-rolloff``.

    Harmonics above the Nyquist frequency sr/2 are dropped (so the tone never aliases). The sum is
    scaled so that its peak is ``amplitude``; ``envelope`` (shape ``(samples,)``) then multiplies
    it. Returns ``(samples,)`` float32.
    """
    n = _num_samples(duration, sr)
    if not 0 < f0 <= sr / 2:
        raise LabkitError(f"f0={f0!r} Hz: must lie in (0, sr/2] = (0, {sr / 2:g}] Hz")
    if n_harmonics < 1:
        raise LabkitError(f"n_harmonics={n_harmonics!r}: need at least 1")
    t = _time(n, sr)
    x = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        if k * f0 >= sr / 2:
            break
        x += k ** (-rolloff) * np.sin(2 * np.pi * k * f0 * t)
    x *= amplitude / max(np.abs(x).max(), 1e-12)
    if envelope is not None:
        envelope = np.asarray(envelope, dtype=np.float64)
        if envelope.shape != (n,):
            raise LabkitError(f"envelope has shape {envelope.shape}, expected ({n},) for "
                             f"duration={duration} s at sr={sr}")
        x = x * envelope
    return _finish(x)


def midi_to_hz(note: float | np.ndarray) -> np.ndarray | float:
    """Frequency in Hz of MIDI note number(s) ``note`` (69 = A4 = 440 Hz, 12 notes per octave)."""
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69.0) / 12.0)


def chord(freqs: Sequence[float], duration: float, sr: int = 22050, n_harmonics: int = 6,
          rolloff: float = 1.5, amplitude: float = 0.5) -> np.ndarray:
    """Several :func:`harmonic_tone` s at fundamentals ``freqs`` (Hz) played together.

    Each note gets equal weight; the sum is scaled to peak ``amplitude``. Returns ``(samples,)``.
    Use :func:`midi_to_hz` for named pitches, e.g. C major = ``midi_to_hz([60, 64, 67])``.
    """
    if len(freqs) == 0:
        raise LabkitError("freqs is empty: give at least one fundamental frequency in Hz")
    x = sum(harmonic_tone(f, duration, sr, n_harmonics, rolloff, 1.0).astype(np.float64)
            for f in freqs)
    x *= amplitude / max(np.abs(x).max(), 1e-12)
    return _finish(x)


def click_train(rate: float, duration: float, sr: int = 22050, amplitude: float = 0.5,
                offset: float = 0.0) -> np.ndarray:
    """Unit impulses (single non-zero samples of height ``amplitude``) every ``1/rate`` s.

    The first click is at ``offset`` seconds. An impulse has a flat spectrum and is as short as a
    sound can be: the test signal for time resolution. Returns ``(samples,)`` float32; the click
    positions are ``click_positions(rate, duration, sr, offset)``.
    """
    n = _num_samples(duration, sr)
    x = np.zeros(n, dtype=np.float32)
    x[click_positions(rate, duration, sr, offset)] = amplitude
    return x


def click_positions(rate: float, duration: float, sr: int = 22050,
                    offset: float = 0.0) -> np.ndarray:
    """Sample indices of the clicks of :func:`click_train` (int64, ascending)."""
    if not rate > 0:
        raise LabkitError(f"rate={rate!r}: clicks per second must be positive")
    n = _num_samples(duration, sr)
    times = np.arange(offset, duration, 1.0 / rate)
    idx = np.round(times * sr).astype(np.int64)
    return idx[(idx >= 0) & (idx < n)]


def noise_burst(duration: float, sr: int = 22050, start: float = 0.0,
                length: float | None = None, amplitude: float = 0.5, seed: int = 0,
                highpass: float | None = None) -> np.ndarray:
    """White Gaussian noise that is on only between ``start`` and ``start + length`` seconds.

    The burst is scaled to peak ``amplitude`` and faded in and out over 5 ms. ``highpass`` (Hz)
    removes everything below that frequency (by zeroing FFT bins), which turns the hiss into an
    "s"-like or hi-hat-like sound. Returns ``(samples,)`` float32; deterministic from ``seed``.
    """
    n = _num_samples(duration, sr)
    length = duration - start if length is None else length
    a, b = round(start * sr), round((start + length) * sr)
    if not 0 <= a < b <= n:
        raise LabkitError(f"start={start!r}, length={length!r}: the burst must lie inside "
                         f"[0, {duration}] s and last longer than one sample")
    burst = np.random.default_rng(seed).standard_normal(b - a)
    if highpass is not None:
        _check_frequency("highpass", highpass, sr)
        spectrum = np.fft.rfft(burst)
        spectrum[np.fft.rfftfreq(b - a, 1.0 / sr) < highpass] = 0
        burst = np.fft.irfft(spectrum, n=b - a)
    burst = fade(burst, sr, 0.005, 0.005).astype(np.float64)
    x = np.zeros(n)
    x[a:b] = amplitude * burst / max(np.abs(burst).max(), 1e-12)
    return _finish(x)


def formant_envelope(freqs: np.ndarray, formants: Sequence[float],
                     bandwidths: Sequence[float] = FORMANT_BANDWIDTHS) -> np.ndarray:
    """The spectral envelope (linear amplitude) of a vowel at frequencies ``freqs`` (Hz).

    A sum of resonance peaks ``1 / sqrt(1 + ((f - F_i) / (B_i / 2))**2)``, one per formant F_i with
    bandwidth B_i, each weighted by ``1/(i+1)`` so that higher formants are softer as in speech.
    """
    if len(bandwidths) < len(formants):
        raise LabkitError(f"{len(formants)} formants but only {len(bandwidths)} bandwidths")
    freqs = np.asarray(freqs, dtype=np.float64)
    env = np.zeros_like(freqs)
    for i, (fc, bw) in enumerate(zip(formants, bandwidths)):
        env += (1.0 / (i + 1)) / np.sqrt(1.0 + ((freqs - fc) / (bw / 2.0)) ** 2)
    return env


def vowel(f0: float, duration: float, sr: int = 22050, formants: str | Sequence[float] = "a",
          bandwidths: Sequence[float] = FORMANT_BANDWIDTHS, vibrato_depth: float = 0.0,
          vibrato_rate: float = 5.5, f0_end: float | None = None,
          amplitude: float = 0.5) -> np.ndarray:
    """A vowel-like tone: harmonics of ``f0`` shaped by a formant envelope (source-filter model).

    ``formants`` is a vowel name from :data:`VOWEL_FORMANTS` (``"a"``, ``"e"``, ``"i"``, ``"o"``,
    ``"u"``) or explicit formant frequencies in Hz. The pitch glides linearly from ``f0`` to
    ``f0_end`` (default: stays at ``f0``) with a sinusoidal vibrato of ``vibrato_depth`` semitones
    at ``vibrato_rate`` Hz. Each harmonic's amplitude follows the glottal tilt ``1/k`` times
    :func:`formant_envelope` at its current frequency, so the formants stay put while the pitch
    moves -- which is what lets us hear the same vowel at any pitch. Peak ``amplitude``, 20 ms
    fades, shape ``(samples,)`` float32.
    """
    n = _num_samples(duration, sr)
    if isinstance(formants, str):
        if formants not in VOWEL_FORMANTS:
            raise LabkitError(f"formants={formants!r}: use one of {sorted(VOWEL_FORMANTS)} or a "
                             "sequence of formant frequencies in Hz")
        formants = VOWEL_FORMANTS[formants]
    f0_end = f0 if f0_end is None else f0_end
    for name, value in (("f0", f0), ("f0_end", f0_end)):
        if not 0 < value < sr / 2:
            raise LabkitError(f"{name}={value!r} Hz: must lie in (0, sr/2) = (0, {sr / 2:g}) Hz")
    t = _time(n, sr)
    pitch = np.linspace(f0, f0_end, n) * 2.0 ** (vibrato_depth / 12.0 *
                                                 np.sin(2 * np.pi * vibrato_rate * t))
    base_phase = 2 * np.pi * np.cumsum(pitch) / sr
    x = np.zeros(n)
    max_k = int((sr / 2) // (pitch.max()))
    for k in range(1, max_k + 1):
        gain = formant_envelope(k * pitch, formants, bandwidths) / k
        x += gain * np.sin(k * base_phase)
    x *= amplitude / max(np.abs(x).max(), 1e-12)
    return fade(x, sr, 0.02, 0.02)


# --------------------------------------------------------------------------- example clips
def _place(out: np.ndarray, start: int, piece: np.ndarray) -> None:
    end = min(start + piece.shape[-1], out.shape[-1])
    out[..., start:end] += piece[..., : end - start]


def _to_channels(mono: np.ndarray, channels: int) -> np.ndarray:
    if channels < 1:
        raise LabkitError(f"channels={channels!r}: need at least 1")
    return np.repeat(mono[None], channels, axis=0)


def _normalise(x: np.ndarray, peak: float) -> np.ndarray:
    if not 0 < peak <= 1:
        raise LabkitError(f"peak={peak!r}: must be in (0, 1]")
    return _finish(x * (peak / max(np.abs(x).max(), 1e-12)))


def speech_like(duration: float = 2.0, sr: int = 16000, seed: int = 0, channels: int = 1,
                peak: float = 0.8) -> np.ndarray:
    """A short speech-like clip: voiced vowels with falling intonation, "s"/"t" noise, pauses.

    Syllables of 150-300 ms alternate a noisy consonant (high-passed noise) with a vowel (random
    from :data:`VOWEL_FORMANTS`, pitch falling from ~140 Hz towards ~95 Hz over the phrase, slight
    vibrato), separated by short silences. It is not language, but it has what spectrograms of
    speech show: harmonics, formants, onsets and noise. Returns ``(channels, samples)`` float32 at
    peak ``peak``; the same ``seed`` gives the same clip.
    """
    n = _num_samples(duration, sr)
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    pos = int(0.05 * sr)
    while pos < n - int(0.1 * sr):
        progress = pos / n
        f0 = 140.0 - 45.0 * progress + rng.uniform(-8, 8)
        if rng.random() < 0.6:  # a consonant before the vowel
            consonant = rng.uniform(0.04, 0.09)
            burst = noise_burst(consonant, sr, amplitude=rng.uniform(0.1, 0.25),
                                seed=int(rng.integers(2**31)),
                                highpass=min(rng.uniform(2500, 4500), sr / 2 - 1))
            _place(x, pos, burst)
            pos += burst.size
        length = rng.uniform(0.15, 0.3)
        name = rng.choice(sorted(VOWEL_FORMANTS))
        voiced = vowel(f0, length, sr, formants=str(name), vibrato_depth=0.15,
                       f0_end=f0 * rng.uniform(0.88, 0.98), amplitude=rng.uniform(0.5, 0.8))
        _place(x, pos, voiced)
        pos += voiced.size + int(rng.uniform(0.03, 0.12) * sr)
    x = fade(x, sr, 0.005, 0.02).astype(np.float64)
    return _normalise(_to_channels(x, channels), peak)


def music_like(duration: float = 4.0, sr: int = 22050, seed: int = 0, channels: int = 1,
               tempo: float = 120.0, peak: float = 0.8) -> np.ndarray:
    """A short music-like clip: a I-V-vi-IV chord progression in C, a bass line, kick and hi-hat.

    One chord every two beats at ``tempo`` BPM (C, G, Am, F, repeating): plucked harmonic chords
    (sharp attack, exponential decay), a bass note two octaves below each root, a kick (a fast
    downward sweep) on beats 1 and 3 and a hi-hat (high-passed noise burst) on every off-beat. It
    shows the three things music spectrograms are made of: steady harmonics, sharp onsets and
    broadband noise.
    With ``channels=2`` chords lean left and hi-hats right. Returns ``(channels, samples)`` float32
    at peak ``peak``; ``seed`` varies the voicings and the hi-hat noise.
    """
    n = _num_samples(duration, sr)
    if channels < 1:
        raise LabkitError(f"channels={channels!r}: need at least 1")
    rng = np.random.default_rng(seed)
    beat = 60.0 / tempo
    span = 2 * beat  # one chord every two beats: the progression moves even in a short clip
    progression = [(60, 64, 67), (55, 59, 62), (57, 60, 64), (53, 57, 60)]  # C G Am F
    chords, bass, drums, hats = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    length = min(span, duration)
    decay = np.exp(-_time(round(length * sr), sr) / 0.5)
    bass_env = adsr(round(length * sr), sr, 0.01, 0.2, 0.6, 0.1)
    for i in range(int(np.ceil(duration / span))):
        start = int(i * span * sr)
        notes = np.array(progression[i % 4]) + 12 * rng.integers(0, 2, size=3)
        tone = chord(midi_to_hz(notes), length, sr, n_harmonics=8, rolloff=1.2)
        _place(chords, start, fade(tone * decay, sr, 0.003, 0.02))
        root = progression[i % 4][0] - 24
        _place(bass, start, harmonic_tone(float(midi_to_hz(root)), length, sr, n_harmonics=4,
                                          rolloff=2.0, envelope=bass_env))
    hat_cutoff = min(6000.0, sr / 4)  # bright, yet below Nyquist at low sample rates
    hat_decay = np.exp(-_time(round(0.06 * sr), sr) / 0.015)
    for b in range(int(np.ceil(duration / beat))):
        onset = int(b * beat * sr)
        if b % 2 == 0:
            length = 0.25
            kick = chirp(120.0, 45.0, length, sr, amplitude=1.0, method="log")
            _place(drums, onset, kick * np.exp(-_time(kick.size, sr) / 0.06))
        hat_start = onset + int(beat / 2 * sr)
        hat = noise_burst(0.06, sr, amplitude=1.0, highpass=hat_cutoff,
                          seed=int(rng.integers(2**31)))
        _place(hats, hat_start, hat * hat_decay)
    mix_mono = 0.35 * chords + 0.3 * bass + 0.45 * drums + 0.08 * hats
    if channels == 1:
        out = mix_mono[None]
    else:
        # equal stems in every channel except a left lean for chords and right lean for hi-hats
        pan = np.linspace(0.0, 1.0, channels)
        out = (0.3 * bass + 0.45 * drums)[None] + np.outer(1.2 - 0.4 * pan, 0.35 * chords) \
            + np.outer(0.6 + 0.8 * pan, 0.08 * hats)
    return _normalise(fade(out, sr, 0.002, 0.05).astype(np.float64), peak)


__all__ = [
    "FORMANT_BANDWIDTHS", "VOWEL_FORMANTS", "adsr", "chirp", "chirp_frequency", "chord",
    "click_positions", "click_train", "fade", "formant_envelope", "harmonic_tone", "midi_to_hz",
    "music_like", "noise_burst", "sine", "speech_like", "vowel",
]
