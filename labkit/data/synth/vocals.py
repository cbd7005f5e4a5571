"""The lead voice: a sung (or rapped) line with vowels, consonants, breaths, vibrato and glides.

Engines (each draws its voice type, vowel set and voice quality per track):

- ``klatt``: source-filter synthesis: a band-limited glottal sawtooth plus aspiration noise through
  a cascade of five formant resonators (Klatt), applied frame by frame in the STFT domain.
- ``fof``: formant-wave-function synthesis (IRCAM's CHANT): one decaying sinusoidal grain per
  formant at every glottal pulse, with CHANT's vowel tables for bass/tenor/alto/soprano.
- ``additive``: a sinusoidal voice: every harmonic is an oscillator with its own random phase and
  an amplitude read from a parallel formant envelope, plus a band of breath noise.
- ``choir``: three source-filter singers in harmony (different tracts, vibratos and timing).
- ``talkbox``: a buzzy synthesiser (sawtooth + pulse) through narrow formants: a robotic voice.
- ``rap``: a speech-like source-filter voice: syllables on sixteenths, gliding intonation instead
  of scale pitches, many consonants.

All engines share the performance (notes, phrases, f0 contour, loudness, vowel track) and the
consonants and breaths; they differ in how the sound is produced.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.signal

from labkit.data.synth import dsp
from labkit.data.synth.layers import Layer, Part
from labkit.data.synth.music import STEPS_PER_BAR, Note, Score, melody, nearest_in

ENGINES: tuple[str, ...] = ("klatt", "fof", "additive", "choir", "talkbox", "rap")

# Voice types: singing range (MIDI), vocal-tract scale relative to an adult male, CHANT table.
VOICE_TYPES: dict[str, tuple[int, int, float]] = {
    "bass": (43, 62, 0.97), "tenor": (48, 69, 1.03), "alto": (53, 74, 1.15),
    "soprano": (58, 79, 1.22),
}

# Peterson & Barney (1952), adult male averages: F1, F2, F3 in Hz.
PETERSON_BARNEY: dict[str, tuple[float, float, float]] = {
    "i": (270, 2290, 3010), "I": (390, 1990, 2550), "E": (530, 1840, 2480),
    "ae": (660, 1720, 2410), "a": (730, 1090, 2440), "O": (570, 840, 2410),
    "U": (440, 1020, 2240), "u": (300, 870, 2240), "V": (640, 1190, 2390),
    "3": (490, 1350, 1690),
}

# CHANT / Csound formant tables: (F1..F5 Hz), (amplitudes dB), (bandwidths Hz).
CHANT: dict[str, dict[str, tuple[tuple[float, ...], ...]]] = {
    "soprano": {
        "a": ((800, 1150, 2900, 3900, 4950), (0, -6, -32, -20, -50), (80, 90, 120, 130, 140)),
        "e": ((350, 2000, 2800, 3600, 4950), (0, -20, -15, -40, -56), (60, 100, 120, 150, 200)),
        "i": ((270, 2140, 2950, 3900, 4950), (0, -12, -26, -26, -44), (60, 90, 100, 120, 120)),
        "o": ((450, 800, 2830, 3800, 4950), (0, -11, -22, -22, -50), (70, 80, 100, 130, 135)),
        "u": ((325, 700, 2700, 3800, 4950), (0, -16, -35, -40, -60), (50, 60, 170, 180, 200)),
    },
    "alto": {
        "a": ((800, 1150, 2800, 3500, 4950), (0, -4, -20, -36, -60), (80, 90, 120, 130, 140)),
        "e": ((400, 1600, 2700, 3300, 4950), (0, -24, -30, -35, -60), (60, 80, 120, 150, 200)),
        "i": ((350, 1700, 2700, 3700, 4950), (0, -20, -30, -36, -60), (50, 100, 120, 150, 200)),
        "o": ((450, 800, 2830, 3500, 4950), (0, -9, -16, -28, -55), (70, 80, 100, 130, 135)),
        "u": ((325, 700, 2530, 3500, 4950), (0, -12, -30, -40, -64), (50, 60, 170, 180, 200)),
    },
    "tenor": {
        "a": ((650, 1080, 2650, 2900, 3250), (0, -6, -7, -8, -22), (80, 90, 120, 130, 140)),
        "e": ((400, 1700, 2600, 3200, 3580), (0, -14, -12, -14, -20), (70, 80, 100, 120, 120)),
        "i": ((290, 1870, 2800, 3250, 3540), (0, -15, -18, -20, -30), (40, 90, 100, 120, 120)),
        "o": ((400, 800, 2600, 2800, 3000), (0, -10, -12, -12, -26), (40, 80, 100, 120, 120)),
        "u": ((350, 600, 2700, 2900, 3300), (0, -20, -17, -14, -26), (40, 60, 100, 120, 120)),
    },
    "bass": {
        "a": ((600, 1040, 2250, 2450, 2750), (0, -7, -9, -9, -20), (60, 70, 110, 120, 130)),
        "e": ((400, 1620, 2400, 2800, 3100), (0, -12, -9, -12, -18), (40, 80, 100, 120, 120)),
        "i": ((250, 1750, 2600, 3050, 3340), (0, -30, -16, -22, -28), (60, 90, 100, 120, 120)),
        "o": ((400, 750, 2400, 2600, 2900), (0, -11, -21, -20, -40), (40, 80, 100, 120, 120)),
        "u": ((350, 600, 2400, 2675, 2950), (0, -20, -32, -28, -36), (40, 80, 100, 120, 120)),
    },
}

VOWEL_SETS: dict[str, tuple[str, ...]] = {
    "english": tuple(PETERSON_BARNEY),
    "open": ("a", "ae", "V", "O", "E"),
    "closed": ("i", "I", "u", "U", "3", "E"),
    "italian": ("a", "E", "i", "O", "u"),
}

# Consonants at syllable onsets: name -> weight. Nasals and "l" are voiced (a formant target);
# the rest are noise (fricatives, plosive bursts).
CONSONANTS: dict[str, float] = {"s": 0.13, "t": 0.14, "k": 0.09, "m": 0.12, "n": 0.14,
                                "h": 0.08, "sh": 0.05, "f": 0.06, "p": 0.07, "l": 0.12}
_VOICED_CONSONANTS = {
    "m": ((250, 1000, 2300, 3300, 3750), (100, 200, 250, 300, 300), -9.0),
    "n": ((250, 1500, 2400, 3300, 3750), (100, 200, 250, 300, 300), -8.0),
    "l": ((360, 1100, 2600, 3300, 3750), (80, 150, 200, 250, 300), -4.0),
}
# Noise consonants: (band low, band high) Hz for an adult male tract, duration s, level dB.
_NOISE_CONSONANTS = {
    "s": ((4200, 9000), 0.09, -6.0), "sh": ((2000, 5500), 0.1, -7.0),
    "f": ((1200, 7500), 0.08, -15.0), "h": ((500, 3000), 0.07, -16.0),
    "t": ((3000, 8000), 0.025, -6.0), "k": ((1500, 4000), 0.03, -8.0),
    "p": ((500, 2500), 0.02, -10.0),
}


# Formants above F5 for an adult male tract (Hz), their bandwidths and, for the parallel
# (FOF, additive) engines, their levels in dB re F1.
_HIGH_FORMANTS = (4900.0, 5900.0, 7000.0)
_HIGH_BANDWIDTHS = (350.0, 450.0, 600.0)
_HIGH_LEVELS = (-28.0, -32.0, -36.0)


@dataclass
class Voice:
    """A singer's character, drawn per track."""

    engine: str
    voice_type: str
    tract: float
    vowel_set: str
    breathiness: float
    tilt: float
    singer_formant: float
    bandwidth: float
    vibrato_rate: float
    vibrato_depth: float
    vibrato_delay: float
    glide: float
    scoop: float
    consonants: float
    attack: float
    release: float
    range_low: int = 48
    range_high: int = 67

    def meta(self) -> dict:
        """JSON-ready description."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _draw_voice(engine: str, rng: np.random.Generator) -> Voice:
    if engine == "fof":
        voice_type = str(rng.choice(["tenor", "alto", "soprano", "soprano", "bass"]))
    else:
        voice_type = str(rng.choice(list(VOICE_TYPES), p=[0.15, 0.35, 0.3, 0.2]))
    low, high, tract = VOICE_TYPES[voice_type]
    # A song uses about an octave and a half of the singer's range.
    span = int(rng.integers(12, 17))
    first = int(rng.integers(low, max(low + 1, high - span + 1)))
    voice = Voice(
        engine=engine, voice_type=voice_type, tract=tract * float(rng.uniform(0.95, 1.06)),
        vowel_set=str(rng.choice(["english", "open", "italian", "closed"])),
        breathiness=float(rng.uniform(0.03, 0.3)), tilt=float(rng.uniform(0.0, 4.0)),
        singer_formant=float(rng.uniform(0.0, 9.0)), bandwidth=float(rng.uniform(0.8, 1.4)),
        vibrato_rate=float(rng.uniform(4.6, 6.6)), vibrato_depth=float(rng.uniform(25, 75)),
        vibrato_delay=float(rng.uniform(0.12, 0.3)), glide=float(rng.uniform(0.015, 0.05)),
        scoop=float(rng.uniform(0.2, 0.8)), consonants=float(rng.uniform(0.35, 0.8)),
        attack=float(rng.uniform(0.015, 0.05)), release=float(rng.uniform(0.05, 0.14)),
        range_low=first, range_high=min(first + span, high),
    )
    if engine == "talkbox":
        voice.bandwidth = float(rng.uniform(0.35, 0.6))
        voice.tilt = float(rng.uniform(-2.0, 1.0))
        voice.vibrato_depth = float(rng.uniform(0.0, 15.0))
        voice.breathiness = 0.0
        voice.scoop = 0.05
        voice.consonants = float(rng.uniform(0.1, 0.3))
        voice.glide = float(rng.uniform(0.02, 0.06))
    elif engine == "rap":
        voice.vibrato_depth = float(rng.uniform(0.0, 8.0))
        voice.consonants = float(rng.uniform(0.7, 0.95))
        voice.glide = float(rng.uniform(0.04, 0.09))
        voice.vowel_set = "english"
        voice.attack = float(rng.uniform(0.008, 0.02))
        voice.release = float(rng.uniform(0.03, 0.07))
    elif engine == "choir":
        voice.vowel_set = str(rng.choice(["open", "italian"]))
        voice.consonants = float(rng.uniform(0.1, 0.35))
        voice.attack = float(rng.uniform(0.05, 0.12))
        voice.release = float(rng.uniform(0.15, 0.3))
    elif engine == "fof":
        voice.vowel_set = "cardinal"
    return voice


# --------------------------------------------------------------------------- the performance
def _sung_notes(rng: np.random.Generator, score: Score, voice: Voice) -> list[Note]:
    bars = score.vocal_bars()
    style = rng.choice(["ballad", "pop", "pop", "busy"])
    durations = {"ballad": (2, 3, 4, 4, 6, 8), "pop": (1, 2, 2, 2, 3, 4, 4),
                 "busy": (1, 1, 2, 2, 2, 3)}[str(style)]
    notes = melody(rng, score, bars, voice.range_low, voice.range_high, durations,
                   phrase_bars=int(rng.choice([1, 2, 2])), legato=float(rng.uniform(0.3, 0.8)),
                   jitter=0.012)
    return notes


def _rapped_notes(rng: np.random.Generator, score: Score, voice: Voice) -> list[Note]:
    """Syllables on the sixteenth grid with a falling, accented intonation per phrase."""
    notes: list[Note] = []
    centre = (voice.range_low + voice.range_high) / 2 - 4
    skipped = True
    for bar in score.vocal_bars():
        if not skipped and rng.random() < 0.2:
            skipped = True  # a bar to breathe (never two in a row, never the first)
            continue
        skipped = False
        step = bar * STEPS_PER_BAR + int(rng.choice([0, 0, 1, 2]))
        end = (bar + 1) * STEPS_PER_BAR - int(rng.choice([2, 3, 4, 4, 6, 8]))
        base = centre + rng.normal(0, 1.5)
        first = len(notes)
        while step < end:
            dur = int(rng.choice([1, 1, 1, 2, 2, 3]))
            dur = min(dur, end - step)
            t0, t1 = score.step_time(step), score.step_time(step + dur)
            progress = (step - bar * STEPS_PER_BAR) / STEPS_PER_BAR
            accent = rng.uniform(1.0, 4.0) if step % 4 == 0 else rng.uniform(-0.5, 1.0)
            pitch = base + accent - 3.0 * progress
            in_word = rng.random() < 0.55
            gap = 0.0 if in_word else min(0.3 * (t1 - t0), 0.05)
            notes.append(Note(t0 + float(rng.normal(0, 0.006)), t1 - gap, float(pitch),
                              float(rng.uniform(0.6, 1.0)), legato=in_word))
            step += dur
        if len(notes) > first:
            notes[-1].legato = False
    for a, b in itertools.pairwise(notes):
        if a.legato:
            a.end = max(b.start, a.start + 0.02)
    return [n for n in notes if n.end > 0 and n.start < score.seconds]


def _assign_syllables(rng: np.random.Generator, notes: list[Note], voice: Voice) -> None:
    vowels = ("a", "e", "i", "o", "u") if voice.vowel_set == "cardinal" else VOWEL_SETS[
        voice.vowel_set]
    names, weights = zip(*CONSONANTS.items())
    weights = np.array(weights) / np.sum(weights)
    previous = None
    for note in notes:
        choices = [v for v in vowels if v != previous] or list(vowels)
        vowel = str(rng.choice(choices))
        previous = vowel
        note.tags["vowel"] = vowel
        if note.end - note.start > 0.5 and rng.random() < 0.3:
            note.tags["vowel2"] = str(rng.choice(vowels))
        note.tags["consonant"] = (str(rng.choice(names, p=weights))
                                  if rng.random() < voice.consonants else "")


def _phrases(notes: list[Note], gap: float = 0.12) -> list[list[Note]]:
    """Notes grouped into phrases separated by rests longer than ``gap`` seconds."""
    phrases: list[list[Note]] = []
    for note in notes:
        if phrases and note.start - phrases[-1][-1].end < gap:
            phrases[-1].append(note)
        else:
            phrases.append([note])
    return phrases


def _formant_table(name: str, voice: Voice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, B, A dB) of five formants for vowel ``name`` sung by ``voice``."""
    if voice.vowel_set == "cardinal":
        f, a, b = CHANT[voice.voice_type][name]
        return np.array(f, float), np.array(b, float) * voice.bandwidth, np.array(a, float)
    if name in _VOICED_CONSONANTS:
        f, b, _ = _VOICED_CONSONANTS[name]
        f = np.array(f, float) * voice.tract
        b = np.array(b, float) * voice.bandwidth
    else:
        f1, f2, f3 = PETERSON_BARNEY[name]
        f = np.array([f1, f2, f3, 3300.0, 3850.0]) * voice.tract
        b = np.array([60.0 + 0.06 * f1, 80.0 + 0.03 * f2, 120.0, 180.0, 240.0]) * voice.bandwidth
    # Parallel amplitudes: what the cascade of the same formants gives at each peak.
    cascade = np.prod(dsp.resonance(f[:, None], f[None, :], b[None, :]), axis=1)
    a = 20 * np.log10(cascade / cascade[0])
    return f, b, a


@dataclass
class Contour:
    """A phrase's control signals: f0 and loudness per sample, formants per STFT frame."""

    f0: np.ndarray
    amp: np.ndarray
    freqs: np.ndarray
    bands: np.ndarray
    levels: np.ndarray


def _contour(notes: list[Note], t0: float, n: int, sr: int, voice: Voice,
             rng: np.random.Generator, n_fft: int, pitch_shift: float = 0.0) -> Contour:
    """The f0 (Hz), loudness and formant tracks of one phrase starting at ``t0`` seconds."""
    t = t0 + np.arange(n) / sr
    starts = np.array([nt.start for nt in notes])
    # Pitch: the notes' pitches, held through rests, then smoothed (portamento between notes).
    idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(notes) - 1)
    target = np.array([nt.pitch for nt in notes])[idx] + pitch_shift
    a = float(np.exp(-1.0 / (voice.glide * sr)))
    target[: max(1, int((notes[0].start - t0) * sr))] = target[0]
    pitch = scipy.signal.lfilter([1 - a], [1, -a], target - target[0]) + target[0]
    since = t - starts[idx]
    for i, nt in enumerate(notes):
        legato_in = i > 0 and notes[i - 1].legato
        if not legato_in and rng.random() < voice.scoop:
            s0 = max(int((nt.start - t0) * sr), 0)
            s1 = min(s0 + int(0.25 * sr), n)
            depth = rng.uniform(0.3, 1.6)
            tau = rng.uniform(0.03, 0.08)
            pitch[s0:s1] -= depth * np.exp(-np.arange(s1 - s0) / (tau * sr))
    if rng.random() < 0.35:
        # A fall at the end of the phrase.
        s0 = min(max(int((notes[-1].end - t0) * sr) - int(0.1 * sr), 0), n)
        pitch[s0:] -= np.linspace(0, rng.uniform(0.5, 3.0), n - s0)
    # Vibrato fades in after a delay on every new note, and its rate wanders a little.
    ramp = np.clip((since - voice.vibrato_delay) / 0.25, 0.0, 1.0)
    rate = voice.vibrato_rate * (1 + 0.04 * dsp.smooth_noise(rng, n, sr, 1.5))
    vib = np.sin(dsp.TWO_PI * np.cumsum(rate) / sr + rng.uniform(0, dsp.TWO_PI))
    cents = voice.vibrato_depth * ramp * vib
    cents += rng.uniform(4, 12) * dsp.smooth_noise(rng, n, sr, 3.0)
    cents += rng.uniform(1, 4) * dsp.smooth_noise(rng, n, sr, 40.0)
    f0 = dsp.midi_to_hz(pitch + cents / 100.0)

    # Loudness: attack and release around every note; consonants dip the voicing.
    amp = np.zeros(n, dtype=np.float32)
    for i, nt in enumerate(notes):
        s0 = int((nt.start - t0) * sr)
        s1 = int((nt.end - t0) * sr)
        length = min(s1 + int(4 * voice.release * sr), n) - s0
        if length <= 0:
            continue
        env = dsp.adsr(length, sr, voice.attack, 0.4, 0.8, voice.release, (s1 - s0) / sr)
        env *= nt.velocity
        lo = max(s0, 0)
        seg = env[lo - s0:]
        amp[lo:lo + seg.size] = np.maximum(amp[lo:lo + seg.size], seg)
        consonant = nt.tags.get("consonant", "")
        if i > 0 and notes[i - 1].legato and consonant:
            # Inside a word the consonant interrupts the voicing for a moment.
            depth = 0.15 if consonant in _NOISE_CONSONANTS else 0.5
            w = int(0.04 * sr)
            dip = 1 - (1 - depth) * np.sin(np.linspace(0, np.pi, 2 * w)) ** 2
            add_lo, add_hi = max(s0 - w, 0), min(s0 + w, n)
            amp[add_lo:add_hi] *= dip[add_lo - (s0 - w):add_hi - (s0 - w)].astype(np.float32)
        if consonant in _VOICED_CONSONANTS:
            w = min(int(0.07 * sr), max(s1 - s0, 1))
            level = dsp.db_to_gain(_VOICED_CONSONANTS[consonant][2])
            lo, hi = max(s0, 0), min(s0 + w, n)
            if hi > lo:
                ramp = np.linspace(level, 1.0, w)[lo - s0:hi - s0]
                amp[lo:hi] *= ramp.astype(np.float32)
    amp *= (1 + 0.12 * dsp.smooth_noise(rng, n, sr, 1.0)).clip(0.5, 1.5)
    amp *= (1 + 0.04 * dsp.smooth_noise(rng, n, sr, 60.0))

    # Formant targets per frame: the note's vowel (a diphthong moves to a second vowel), a
    # voiced consonant at the onset, then smoothing over ~50 ms for coarticulation.
    ft = dsp.frame_times(n, sr, n_fft) + t0
    fidx = np.clip(np.searchsorted(starts, ft, side="right") - 1, 0, len(notes) - 1)
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def table(name: str):
        if name not in cache:
            cache[name] = _formant_table(name, voice)
        return cache[name]

    frames = ft.size
    freqs = np.empty((frames, 5))
    bands = np.empty((frames, 5))
    levels = np.empty((frames, 5))
    for i, nt in enumerate(notes):
        sel = fidx == i
        if not sel.any():
            continue
        names = np.full(sel.sum(), nt.tags.get("vowel", "a"), dtype=object)
        local = ft[sel] - nt.start
        if "vowel2" in nt.tags:
            names[local > 0.6 * (nt.end - nt.start)] = nt.tags["vowel2"]
        consonant = nt.tags.get("consonant", "")
        if consonant in _VOICED_CONSONANTS and voice.vowel_set != "cardinal":
            names[local < 0.06] = consonant
        for name in set(names):
            f, b, lv = table(name)
            where = np.flatnonzero(sel)[names == name]
            freqs[where], bands[where], levels[where] = f, b, lv
    hop_s = (n_fft // 4) / sr
    k = max(1, round(0.05 / hop_s))
    kernel = np.hanning(k + 2)[1:-1]
    kernel /= kernel.sum()
    for arr in (freqs, bands, levels):
        padded = np.pad(arr, ((k, k), (0, 0)), mode="edge")
        arr[:] = scipy.signal.fftconvolve(padded, kernel[:, None], mode="same", axes=0)[k:-k]
    # Singers raise F1 to stay above f0 on high notes ("formant tuning").
    f0_frames = np.interp(ft, t, f0)
    freqs[:, 0] = np.maximum(freqs[:, 0], 1.1 * f0_frames)
    return Contour(f0=f0, amp=amp, freqs=freqs, bands=bands, levels=levels)


# --------------------------------------------------------------------------- sound production
def _spectral_envelope(contour: Contour, voice: Voice, sr: int, n_fft: int,
                       cascade: bool = True) -> np.ndarray:
    """Per-frame magnitude response ``(frames, bins)`` of the vocal tract (and source tilt)."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr).astype(np.float32)[None, :]
    freqs = contour.freqs.astype(np.float32)
    bands = contour.bands.astype(np.float32)
    if cascade:
        gains = np.ones((freqs.shape[0], bins.size), dtype=np.float32)
        for i in range(5):
            gains *= dsp.resonance(bins, freqs[:, i:i + 1], bands[:, i:i + 1])
    else:
        gains = np.zeros((freqs.shape[0], bins.size), dtype=np.float32)
        levels = dsp.db_to_gain(contour.levels).astype(np.float32)
        for i in range(5):
            gains += levels[:, i:i + 1] * dsp.peak_response(bins, freqs[:, i:i + 1],
                                                            bands[:, i:i + 1])
    # Fixed shaping along frequency: the tract's higher formants (without them a five-formant
    # cascade falls at 60 dB/octave above F5, far darker than a voice), source tilt, the
    # singer's formant, a roll-off above 10 kHz.
    shape = np.ones_like(bins)
    for f, b, level in zip(_HIGH_FORMANTS, _HIGH_BANDWIDTHS, _HIGH_LEVELS):
        if cascade:
            shape = shape * dsp.resonance(bins, f * voice.tract, b)
        else:
            shape = shape + dsp.db_to_gain(level) * dsp.peak_response(bins, f * voice.tract, b)
    shape = shape * (np.maximum(bins, 300.0) / 300.0) ** (-voice.tilt / 6.02)
    if voice.singer_formant > 0:
        shape = shape * (1 + (dsp.db_to_gain(voice.singer_formant) - 1) * dsp.peak_response(
            bins, 3000.0 * voice.tract, 600.0))
    shape = shape / np.sqrt(1 + (bins / 10000.0) ** 4)
    gains *= shape.astype(np.float32)
    return gains


def _glottal_source(contour: Contour, voice: Voice, sr: int, rng: np.random.Generator,
                    bright: bool = False) -> np.ndarray:
    n = contour.f0.size
    cyc = dsp.cycles(contour.f0, n, sr, rng.uniform())
    top = float(contour.f0.max())
    voiced = dsp.wavetable(cyc, "saw", top, sr, limit=14000.0)
    if bright:
        voiced = 0.6 * voiced + 0.5 * dsp.wavetable(cyc, "square", top, sr, limit=14000.0)
    # Aspiration: noise that pulses with the glottal cycle (louder while the folds are open).
    open_phase = 0.35 + 0.65 * ((cyc - np.floor(cyc)) < 0.55)
    asp = dsp.noise(rng, n) * open_phase.astype(np.float32) * np.float32(voice.breathiness)
    return ((voiced + asp) * contour.amp).astype(np.float32)


def _source_filter(notes, t0, n, sr, voice, rng, n_fft, pitch_shift=0.0, bright=False):
    contour = _contour(notes, t0, n, sr, voice, rng, n_fft, pitch_shift)
    source = _glottal_source(contour, voice, sr, rng, bright=bright)
    gains = _spectral_envelope(contour, voice, sr, n_fft, cascade=True)
    return dsp.stft_filter(source, gains, n_fft)


def _fof(notes, t0, n, sr, voice, rng, n_fft):
    """Formant-wave-function synthesis: a grain per formant at every glottal pulse."""
    contour = _contour(notes, t0, n, sr, voice, rng, n_fft)
    cyc = dsp.cycles(contour.f0, n, sr, rng.uniform())
    pulses = np.flatnonzero(np.diff(np.floor(cyc)) > 0) + 1
    pulses = pulses[contour.amp[pulses] > 1e-4]
    out = np.zeros(n, dtype=np.float64)
    if pulses.size == 0:
        return out.astype(np.float32)
    length = int(0.022 * sr)
    t = np.arange(length, dtype=np.float32) / np.float32(sr)
    hop = n_fft // 4
    frame = np.clip(np.round(pulses / hop).astype(int), 0, contour.freqs.shape[0] - 1)
    attack = np.float32(rng.uniform(0.0015, 0.004))
    rise = np.where(t < attack, 0.5 - 0.5 * np.cos(np.pi * t / attack), 1.0).astype(np.float32)
    taper = np.ones(length, dtype=np.float32)
    m = length // 4
    taper[-m:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, m))
    grains = np.zeros((pulses.size, length), dtype=np.float32)
    jitter = (1 + 0.05 * rng.standard_normal(pulses.size)).astype(np.float32)
    tilt_db = -voice.tilt * np.log2(np.maximum(contour.freqs[frame], 300.0) / 300.0)
    for i in range(5):
        f = contour.freqs[frame, i:i + 1].astype(np.float32)
        b = contour.bands[frame, i:i + 1].astype(np.float32)
        level = dsp.db_to_gain(contour.levels[frame, i:i + 1] + tilt_db[:, i:i + 1])
        phase = dsp.TWO_PI * f * t[None, :]
        grains += (level.astype(np.float32) * np.exp(-np.pi * b * t[None, :])
                   * np.sin(phase).astype(np.float32))
    grains *= (rise * taper)[None, :]
    grains *= (contour.amp[pulses] * jitter)[:, None]
    index = (pulses[:, None] + np.arange(length)[None, :]).ravel()
    keep = index < n
    out = np.bincount(index[keep], weights=grains.ravel()[keep], minlength=n)[:n]
    # Breath: noise shaped by the same formants, following the loudness.
    breath = dsp.noise(rng, n) * contour.amp
    gains = _spectral_envelope(contour, voice, sr, n_fft, cascade=False)
    return _with_breath(out.astype(np.float32), dsp.stft_filter(breath, gains, n_fft),
                        0.5 * voice.breathiness)


def _additive(notes, t0, n, sr, voice, rng, n_fft):
    """A sinusoidal voice: harmonics with random phases and formant-envelope amplitudes."""
    contour = _contour(notes, t0, n, sr, voice, rng, n_fft)
    limit = min(7500.0, 0.45 * sr)
    k_max = int(min(60, limit // max(contour.f0.min(), 50.0)))
    hop = n_fft // 4
    frames = contour.freqs.shape[0]
    f0_frames = contour.f0[np.minimum(np.arange(frames) * hop, n - 1)]
    cyc = dsp.cycles(contour.f0, n, sr, 0.0)
    rolloff = float(rng.uniform(0.6, 1.1))
    out = np.zeros(n, dtype=np.float32)
    positions = np.arange(frames) * hop
    samples = np.arange(n)
    for k in range(1, k_max + 1):
        fk = k * f0_frames
        env = np.zeros(frames)
        for i in range(5):
            env += dsp.db_to_gain(contour.levels[:, i]) * dsp.peak_response(
                fk, contour.freqs[:, i], contour.bands[:, i])
        env *= k ** (-rolloff) * (np.maximum(fk, 300.0) / 300.0) ** (-voice.tilt / 6.02)
        env[fk > limit] = 0.0
        if not env.any():
            continue
        amp = np.interp(samples, positions, env).astype(np.float32)
        out += dsp.sine_from_cycles(cyc + rng.uniform() / k, k) * amp
    out *= contour.amp
    breath = dsp.filt(dsp.butter("bandpass", (1500.0, 7000.0), sr), dsp.noise(rng, n))
    return _with_breath(out, breath * contour.amp, 0.4 * voice.breathiness)


def _with_breath(voiced: np.ndarray, breath: np.ndarray, breathiness: float) -> np.ndarray:
    """``voiced`` plus ``breath`` scaled to ``breathiness`` times its RMS (amplitude ratio)."""
    v = float(np.sqrt(np.mean(voiced ** 2))) + 1e-12
    b = float(np.sqrt(np.mean(breath ** 2))) + 1e-12
    return (voiced + breath * np.float32(breathiness * v / b)).astype(np.float32)


# --------------------------------------------------------------------------- consonants, breaths
def _noise_consonant(kind: str, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """A noise consonant whose RMS is ``level`` dB re a voiced sound of RMS 1."""
    (lo, hi), duration, level = _NOISE_CONSONANTS[kind]
    duration *= rng.uniform(0.8, 1.3)
    n = max(int(duration * sr), 16)
    sos = dsp.butter("bandpass", (lo * voice.tract, hi * voice.tract), sr, order=2)
    x = dsp.filt(sos, dsp.noise(rng, n + 256))[256:]
    if kind in ("t", "k", "p"):
        env = dsp.exp_decay(n, sr, duration / 3)
    else:
        ramp = np.sin(np.linspace(0, np.pi, n)) ** 0.7
        env = ramp.astype(np.float32)
    x = x * env
    x /= np.sqrt(np.mean(x ** 2)) + 1e-12
    return (x * dsp.db_to_gain(level + rng.normal(0, 2))).astype(np.float32)


def _breath(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.2, 0.45) * sr)
    x = dsp.filt(dsp.butter("bandpass", (500.0, 2800.0), sr), dsp.noise(rng, n))
    x += 0.5 * dsp.filt(dsp.peaking(1200.0, 9.0, 2.0, sr), x)
    env = np.sin(np.linspace(0, np.pi, n)) ** 1.5
    return (x * env * dsp.db_to_gain(rng.uniform(-30, -22))).astype(np.float32)


def _consonants_and_breaths(notes: list[Note], phrase_start: float, t0: float, n: int, sr: int,
                            voice: Voice, rng: np.random.Generator, breath: bool) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    for nt in notes:
        kind = nt.tags.get("consonant", "")
        if kind not in _NOISE_CONSONANTS:
            continue
        if voice.engine == "talkbox" and kind not in ("t", "k", "p"):
            continue
        x = _noise_consonant(kind, sr, voice, rng)
        # Fricatives come just before the beat (singers put the vowel on it); bursts at it.
        lead = x.size if kind in ("s", "sh", "f", "h") else int(0.01 * sr)
        dsp.add_at(out, x, int((nt.start - t0) * sr) - lead)
    if breath:
        x = _breath(sr, rng)
        dsp.add_at(out, x, int((phrase_start - t0) * sr) - x.size - int(0.03 * sr))
    return out


# --------------------------------------------------------------------------- engines
def _harmony(notes: list[Note], score: Score, below: int) -> list[Note]:
    """A second voice ``below`` scale steps under the melody, snapped to the chord."""
    scale = score.scale
    out = []
    for nt in notes:
        target = nt.pitch - (3.5 if below == 2 else 8.5)
        chord = score.chord_at(nt.start + 1e-3)
        pcs = tuple(set(chord.pitch_classes) & set(scale)) or chord.pitch_classes
        out.append(Note(nt.start, nt.end, float(nearest_in(target, pcs)), nt.velocity * 0.9,
                        nt.legato, dict(nt.tags)))
    return out


def _shifted(notes: list[Note], rng: np.random.Generator, sd: float) -> list[Note]:
    out = []
    for nt in notes:
        d = float(rng.normal(0, sd))
        out.append(Note(nt.start + d, nt.end + d, nt.pitch, nt.velocity, nt.legato, nt.tags))
    return out


def _render_voice(notes: list[Note], voice: Voice, score: Score, sr: int, n: int,
                  rng: np.random.Generator, breaths: float) -> np.ndarray:
    """One singer's line ``(n,)``, rendered phrase by phrase."""
    out = np.zeros(n, dtype=np.float32)
    n_fft = dsp.stft_frame_size(sr)
    for phrase in _phrases(notes):
        t0 = max(phrase[0].start - 0.6, 0.0)
        t1 = min(phrase[-1].end + 6 * voice.release + 0.1, score.seconds)
        m = int((t1 - t0) * sr)
        if m <= n_fft:
            continue
        if voice.engine == "fof":
            y = _fof(phrase, t0, m, sr, voice, rng, n_fft)
        elif voice.engine == "additive":
            y = _additive(phrase, t0, m, sr, voice, rng, n_fft)
        else:
            y = _source_filter(phrase, t0, m, sr, voice, rng, n_fft,
                               bright=voice.engine == "talkbox")
        # Level the voiced sound before adding noises, so their levels are relative to it.
        rms = float(np.sqrt(np.mean(y ** 2))) + 1e-9
        y = y / rms * 0.1
        y += 0.1 * _consonants_and_breaths(phrase, phrase[0].start, t0, m, sr, voice, rng,
                                           breath=voice.engine != "talkbox"
                                           and rng.random() < breaths)
        dsp.fade(y, sr, 0.01, 0.05)
        dsp.add_at(out, y, int(t0 * sr))
    return out


def render(engine: str, score: Score, rng: np.random.Generator, sr: int) -> Part:
    """The vocal stem's layers for ``score`` with ``engine`` (one of :data:`ENGINES`)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown vocal engine {engine!r}: use one of {', '.join(ENGINES)}")
    n = round(score.seconds * sr)
    voice = _draw_voice(engine, rng)
    notes = (_rapped_notes if engine == "rap" else _sung_notes)(rng, score, voice)
    _assign_syllables(rng, notes, voice)
    breaths = float(rng.uniform(0.3, 0.9))
    layers = [Layer("lead", _render_voice(notes, voice, score, sr, n, rng, breaths),
                    pan=float(rng.normal(0, 0.05)))]
    if engine == "choir":
        for below, pan in ((2, -0.5), (5, 0.5)):
            other = _draw_voice("klatt", rng)
            other.engine = "choir"
            other.vowel_set, other.attack, other.release = (voice.vowel_set, voice.attack,
                                                            voice.release)
            other.consonants = 0.0
            line = _shifted(_harmony(notes, score, below), rng, 0.012)
            layers.append(Layer(f"harmony{below}", 0.7 * _render_voice(
                line, other, score, sr, n, rng, 0.0), pan=pan * float(rng.uniform(0.6, 1.0))))
    meta = {"engine": engine, "voice": voice.meta(),
            "notes": [nt.meta() for nt in notes]}
    return Part(layers, meta)
