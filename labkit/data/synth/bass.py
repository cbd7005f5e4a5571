"""The bass stem: a line on the chord roots, played by one of several bass engines.

Every chord's first bass note is its root (the other notes are fifths, octaves, chord and
passing tones, depending on the line's style). Engines keep the spectrum where a bass has it:
harmonics are capped at a few kHz and roll off steeply, so there is next to nothing above 5 kHz.

- ``sine``: a sine with a touch of second and third harmonic (sub bass).
- ``finger``: an electric finger bass: plucked-string partials, higher ones dying faster, a thump.
- ``saw``: a synth bass: a band-limited sawtooth through a low-pass whose cut-off falls after
  each attack, plus a sub-octave sine.
- ``fm``: two-operator FM with a decaying index (the DX7 bass family), low-passed.
- ``pulse``: a low-passed pulse wave with a sine sub (reggae, 8-bit, synth-pop).
- ``upright``: a double bass: woody, short, a pitch bend at the attack, a strong thump.
"""
from __future__ import annotations

import numpy as np

from labkit.data.synth import dsp
from labkit.data.synth.layers import Layer, Part
from labkit.data.synth.music import Note, Score, in_register, nearest_in

ENGINES: tuple[str, ...] = ("sine", "finger", "saw", "fm", "pulse", "upright")

STYLES = ("whole", "eighths", "root_fifth", "walking", "syncopated", "pedal")
_SYNCOPATIONS = ("x..x..x...x.x...", "x.x...x.x..x.x..", "x.....x...x..x..", "x..x......x.....",
                 "x...x.x...x...x.")


def _line(rng: np.random.Generator, score: Score, style: str, low: int) -> list[Note]:
    """The bass notes: for every chord, its root first, then what ``style`` plays."""
    notes: list[Note] = []
    scale = score.scale
    gate = {"whole": 0.97, "eighths": float(rng.uniform(0.55, 0.9)), "root_fifth": 0.85,
            "walking": float(rng.uniform(0.7, 0.9)), "syncopated": float(rng.uniform(0.4, 0.8)),
            "pedal": 0.9}[style]
    sync = _SYNCOPATIONS[int(rng.integers(len(_SYNCOPATIONS)))]
    for i, chord in enumerate(score.chords):
        s0 = round((chord.start - score.offset) / score.sixteenth)
        s1 = round((chord.end - score.offset) / score.sixteenth)
        root = in_register(chord.root, low, low + 11)
        fifth = root + 7 if root + 7 <= low + 16 else root - 5
        nxt = score.chords[i + 1] if i + 1 < len(score.chords) else chord
        next_root = in_register(nxt.root, low, low + 11)
        steps: list[tuple[int, int, int]] = []  # (step, length, pitch)
        length = s1 - s0
        if style == "whole":
            steps = [(s0, length, root)]
        elif style == "pedal":
            steps = [(s0, min(6, length), root)] + ([(s0 + 6, length - 6, root)]
                                                      if length > 8 else [])
        elif style == "eighths":
            steps = [(s, 2, root) for s in range(s0, s1, 2)]
            if len(steps) > 2 and rng.random() < 0.5:
                s, d, _ = steps[-1]
                steps[-1] = (s, d, fifth if rng.random() < 0.5 else root + 12)
        elif style == "root_fifth":
            cycle = [root, fifth, root + 12, fifth]
            steps = [(s, 4, cycle[k % 4]) for k, s in enumerate(range(s0, s1, 4))]
        elif style == "walking":
            tones = [in_register(pc, low, low + 14) for pc in chord.pitch_classes]
            beats = list(range(s0, s1, 4))
            pitch = root
            for k, s in enumerate(beats):
                if k == 0:
                    pitch = root
                elif k == len(beats) - 1:
                    # Approach the next root from a semitone or a scale step away.
                    pitch = next_root + int(rng.choice([-1, 1, -2, 2]))
                    if rng.random() < 0.5:
                        pitch = nearest_in(pitch, scale)
                else:
                    pitch = int(rng.choice(tones))
                steps.append((s, 4, pitch))
        else:  # syncopated
            for k in range(length):
                if sync[k % 16] == "x":
                    if k == 0:
                        pitch = root
                    else:
                        pitch = int(rng.choice([root, root, root + 12, fifth]))
                    steps.append((s0 + k, 2, pitch))
        for step, dur, pitch in steps:
            t0 = score.step_time(step)
            t1 = score.step_time(step + dur)
            start = t0 + float(rng.normal(0, 0.003)) if step != s0 else t0
            notes.append(Note(start, start + (t1 - t0) * gate, float(pitch),
                              float(rng.uniform(0.8, 1.0)), legato=gate > 0.95,
                              tags={"chord_root": step == s0}))
    return [n for n in notes if n.end > 0 and n.start < score.seconds]


# --------------------------------------------------------------------------- engines
def _envelope(n: int, sr: int, gate: float, attack: float, decay: float, sustain: float,
              release: float) -> np.ndarray:
    return dsp.adsr(n, sr, attack, decay, sustain, release, gate)


def _additive_pluck(rng, sr: int, f0: float, n: int, gate: float, pluck: float, decay: float,
                    damping: float, limit: float, bend: float = 0.0) -> np.ndarray:
    """Plucked-string partials: amplitudes from the pluck position, higher partials decay faster."""
    t = np.arange(n) / sr
    freq = f0 * (1 + bend * np.exp(-t / 0.03))
    cyc = dsp.cycles(freq, n, sr)
    out = np.zeros(n, dtype=np.float32)
    k_max = int(min(limit, 0.45 * sr) // f0)
    for k in range(1, k_max + 1):
        amp = abs(np.sin(np.pi * k * pluck)) / k ** 1.6
        tau = decay / (1 + damping * (k - 1) ** 1.3)
        out += dsp.sine_from_cycles(cyc, k) * np.float32(amp) * dsp.exp_decay(n, sr, tau)
    # The player's finger stops the string at release.
    g = int(gate * sr)
    if g < n:
        out[g:] *= dsp.exp_decay(n - g, sr, 0.03)
    return out


def _thump(rng, sr: int, n: int, cutoff: float, level: float) -> np.ndarray:
    m = min(n, int(0.06 * sr))
    x = np.zeros(n, dtype=np.float32)
    x[:m] = dsp.filt(dsp.butter("lowpass", cutoff, sr), dsp.noise(rng, m)) * dsp.exp_decay(
        m, sr, 0.012)
    return x * np.float32(level)


def _engine(engine: str, rng: np.random.Generator, sr: int):
    """A function ``(midi, n_samples, gate_seconds, glide_from) -> note (n,)`` with track params."""
    if engine == "sine":
        h2, h3 = rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.1)
        attack, release = rng.uniform(0.004, 0.015), rng.uniform(0.03, 0.08)

        def play(midi, n, gate, glide):
            f = _pitch_curve(midi, glide, n, sr)
            cyc = dsp.cycles(f, n, sr)
            x = (dsp.sine_from_cycles(cyc) + h2 * dsp.sine_from_cycles(cyc, 2)
                 + h3 * dsp.sine_from_cycles(cyc, 3))
            return x * _envelope(n, sr, gate, attack, 0.3, 0.8, release)
        return play, {"h2": round(float(h2), 3), "h3": round(float(h3), 3)}

    if engine in ("finger", "upright"):
        upright = engine == "upright"
        pluck = rng.uniform(0.08, 0.25)
        decay = rng.uniform(0.25, 0.5) if upright else rng.uniform(0.6, 1.6)
        damping = rng.uniform(0.15, 0.4) if upright else rng.uniform(0.03, 0.15)
        limit = rng.uniform(1000, 1800) if upright else rng.uniform(1500, 2800)
        thump = rng.uniform(0.3, 0.6) if upright else rng.uniform(0.05, 0.25)
        bend = rng.uniform(0.005, 0.015) if upright else 0.0

        def play(midi, n, gate, glide):
            f0 = float(dsp.midi_to_hz(midi))
            x = _additive_pluck(rng, sr, f0, n, gate, pluck, decay, damping, limit, bend)
            return x + _thump(rng, sr, n, 400.0 if upright else 700.0, thump)
        return play, {"pluck": round(float(pluck), 3), "decay": round(float(decay), 3),
                      "harmonic_limit_hz": round(float(limit))}

    if engine == "saw":
        bright_cut = rng.uniform(900, 2500)
        dark_cut = rng.uniform(150, 400)
        env_tau = rng.uniform(0.05, 0.25)
        sub = rng.uniform(0.0, 0.6)
        bright = dsp.butter("lowpass", bright_cut, sr, order=4)
        dark = dsp.butter("lowpass", dark_cut, sr, order=4)

        def play(midi, n, gate, glide):
            f = _pitch_curve(midi, glide, n, sr)
            cyc = dsp.cycles(f, n, sr)
            x = dsp.wavetable(cyc, "saw", float(np.max(f)), sr, limit=6000.0)
            w = dsp.exp_decay(n, sr, env_tau)
            y = dsp.filt(bright, x) * w + dsp.filt(dark, x) * (1 - w)
            # A sub-octave only where it stays audible (above ~35 Hz).
            y += sub * dsp.sine_from_cycles(cyc, 0.5 if float(np.min(f)) >= 70.0 else 1.0)
            return y * _envelope(n, sr, gate, 0.004, 0.4, 0.7, 0.04)
        return play, {"cutoff_hz": [round(float(dark_cut)), round(float(bright_cut))],
                      "sub": round(float(sub), 3)}

    if engine == "fm":
        ratio = float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        index = rng.uniform(1.0, 3.5)
        tau = rng.uniform(0.05, 0.25)
        lowpass = dsp.butter("lowpass", rng.uniform(1500, 2800), sr, order=4)

        def play(midi, n, gate, glide):
            f = _pitch_curve(midi, glide, n, sr)
            cyc = dsp.cycles(f, n, sr)
            idx = 0.3 + index * dsp.exp_decay(n, sr, tau)
            x = np.sin(dsp.TWO_PI * (cyc - np.floor(cyc))
                       + idx * dsp.sine_from_cycles(cyc, ratio)).astype(np.float32)
            return dsp.filt(lowpass, x) * _envelope(n, sr, gate, 0.003, 0.5, 0.6, 0.05)
        return play, {"ratio": ratio, "index": round(float(index), 3)}

    if engine == "pulse":
        duty = rng.uniform(0.2, 0.5)
        cut = rng.uniform(600, 1800)
        sub = rng.uniform(0.2, 0.8)
        lowpass = dsp.butter("lowpass", cut, sr, order=4)

        def play(midi, n, gate, glide):
            f = _pitch_curve(midi, glide, n, sr)
            x = dsp.pulse(f, n, sr, duty, limit=6000.0) * 0.6 + sub * dsp.sine(f, n, sr)
            return dsp.filt(lowpass, x) * _envelope(n, sr, gate, 0.005, 0.3, 0.85, 0.05)
        return play, {"duty": round(float(duty), 3), "cutoff_hz": round(float(cut))}
    raise ValueError(f"unknown bass engine {engine!r}: use one of {', '.join(ENGINES)}")


def _pitch_curve(midi: float, glide_from: float | None, n: int, sr: int) -> np.ndarray | float:
    """Constant pitch, or a slide from ``glide_from`` into ``midi`` over the first ~60 ms."""
    if glide_from is None:
        return float(dsp.midi_to_hz(midi))
    t = np.arange(n) / sr
    curve = midi + (glide_from - midi) * np.exp(-t / 0.02)
    return dsp.midi_to_hz(curve)


def render(engine: str, score: Score, rng: np.random.Generator, sr: int) -> Part:
    """The bass stem's layers for ``score`` with ``engine`` (one of :data:`ENGINES`)."""
    n_total = round(score.seconds * sr)
    play, params = _engine(engine, rng, sr)
    weights = {"whole": 1.0, "eighths": 1.5, "root_fifth": 1.0, "walking": 0.6,
               "syncopated": 1.2, "pedal": 0.8}
    if engine == "upright" or score.swing > 0.15:
        weights["walking"] = 3.0
    names = list(weights)
    p = np.array([weights[k] for k in names])
    style = str(rng.choice(names, p=p / p.sum()))
    low = int(rng.integers(28, 36))
    notes = _line(rng, score, style, low)
    glide_prob = 0.25 if engine in ("saw", "pulse", "sine") else 0.0
    out = np.zeros(n_total, dtype=np.float32)
    cache: dict[tuple, np.ndarray] = {}
    previous = None
    for note in notes:
        gate = note.end - note.start
        n = int((gate + 0.25) * sr)
        glide = None
        if (previous is not None and not note.tags.get("chord_root")
                and rng.random() < glide_prob and abs(previous - note.pitch) <= 7):
            glide = previous
        key = (note.pitch, n, glide)
        if key not in cache:
            cache[key] = dsp.fade(play(note.pitch, n, gate, glide).astype(np.float32), sr,
                                  0.001, 0.02)
        dsp.add_at(out, cache[key] * np.float32(note.velocity), round(note.start * sr))
        previous = note.pitch
    meta = {"engine": engine, "style": style, "lowest_root": low, **params,
            "notes": [nt.meta() for nt in notes]}
    return Part([Layer("bass", out, pan=float(rng.normal(0, 0.03)))], meta)
