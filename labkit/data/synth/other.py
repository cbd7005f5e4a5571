"""The "other" stem: harmony and counter-melody instruments (two to four per track).

Engines (an instrument each; a track picks several and gives each a role and a register, often
the singer's register, so that "other" overlaps the voice as guitars and keys do in real songs):

- ``pad``: detuned band-limited sawtooths, slow attack, low-passed (synth pad).
- ``strings``: an ensemble of sawtooths with independent vibratos, bowed attack, body EQ.
- ``organ``: additive drawbars (sub, fundamental, fifth, octaves...), key click, Leslie tremolo.
- ``piano``: inharmonic additive partials (stiff strings), hammer-position spectrum, damper.
- ``epiano``: FM electric piano (tine and bar), tremolo.
- ``guitar``: plucked-string partials, strummed or picked, clean or overdriven through a cabinet.
- ``mallet``: modal marimba/vibraphone bars.
- ``lead``: a monophonic synth melody with glides and vibrato (the voice's closest rival).
"""
from __future__ import annotations

import numpy as np
import scipy.signal

from labkit.data.synth import dsp
from labkit.data.synth.layers import Layer, Part
from labkit.data.synth.music import STEPS_PER_BAR, Note, Score, melody, voicing

ENGINES: tuple[str, ...] = ("pad", "strings", "organ", "piano", "epiano", "guitar", "mallet",
                            "lead")

ROLES: dict[str, tuple[str, ...]] = {
    "pad": ("sustain",), "strings": ("sustain",), "organ": ("sustain", "comp"),
    "piano": ("comp", "arp"), "epiano": ("comp", "arp"), "guitar": ("comp", "arp"),
    "mallet": ("arp", "melody"), "lead": ("melody",),
}
REGISTERS: dict[str, tuple[int, int]] = {"low": (45, 64), "vocal": (55, 76), "high": (64, 86)}

_COMPS = ("x.......x.......", "....x.......x...", "x..x..x...x..x..", "x.x.x.x.x.x.x.x.",
          "..x...x...x...x.", "x.....x.....x...", "x...x...x...x...", "x..x...x..x.....")


# --------------------------------------------------------------------------- parts
def _sustained(score: Score, low: int, high: int, n_notes: int, rng) -> list[Note]:
    notes: list[Note] = []
    previous = None
    restrike = rng.random() < 0.3
    for chord in score.chords:
        pitches = voicing(chord, low, high, n_notes, previous)
        previous = pitches
        spans = [(chord.start, chord.end)]
        if restrike and chord.end - chord.start > 3 * score.beat:
            mid = (chord.start + chord.end) / 2
            spans = [(chord.start, mid), (mid, chord.end)]
        for a, b in spans:
            for p in pitches:
                notes.append(Note(a + float(rng.normal(0, 0.004)), b - 0.02, float(p),
                                  float(rng.uniform(0.75, 0.95))))
    return notes


def _comped(score: Score, low: int, high: int, n_notes: int, rng, strum: float = 0.0
            ) -> list[Note]:
    notes: list[Note] = []
    rhythm = _COMPS[int(rng.integers(len(_COMPS)))]
    gate = float(rng.uniform(0.3, 0.95))
    previous = None
    for bar in range(score.bars):
        if score.section_of(bar).energy == 0 and rng.random() < 0.5:
            continue
        for s, ch in enumerate(rhythm):
            if ch != "x":
                continue
            step = bar * STEPS_PER_BAR + s
            t0 = score.step_time(step)
            nxt = rhythm.find("x", s + 1)
            length = (nxt if nxt > 0 else STEPS_PER_BAR) - s
            t1 = score.step_time(step + length)
            chord = score.chord_at(t0 + 1e-3)
            pitches = voicing(chord, low, high, n_notes, previous)
            previous = pitches
            direction = 1 if rng.random() < 0.7 else -1
            velocity = float(rng.uniform(0.6, 1.0)) * (1.0 if s % 4 == 0 else 0.85)
            for j, p in enumerate(pitches[::direction]):
                start = t0 + j * strum + float(rng.normal(0, 0.004))
                notes.append(Note(start, t0 + (t1 - t0) * gate, float(p),
                                  velocity * float(rng.uniform(0.9, 1.0))))
    return notes


def _arpeggio(score: Score, low: int, high: int, rng) -> list[Note]:
    notes: list[Note] = []
    every = int(rng.choice([2, 2, 4, 1]))
    shape = str(rng.choice(["up", "down", "updown", "random"]))
    gate = float(rng.uniform(0.5, 1.6))
    previous = None
    for bar in range(score.bars):
        if score.section_of(bar).energy == 0 and rng.random() < 0.4:
            continue
        for s in range(0, STEPS_PER_BAR, every):
            step = bar * STEPS_PER_BAR + s
            t0 = score.step_time(step)
            chord = score.chord_at(t0 + 1e-3)
            pitches = voicing(chord, low, high, 4, previous)
            previous = pitches
            k = s // every
            if shape == "up":
                p = pitches[k % len(pitches)]
            elif shape == "down":
                p = pitches[::-1][k % len(pitches)]
            elif shape == "updown":
                seq = pitches + pitches[-2:0:-1]
                p = seq[k % len(seq)]
            else:
                p = int(rng.choice(pitches))
            t1 = score.step_time(step + every)
            notes.append(Note(t0 + float(rng.normal(0, 0.004)), t0 + (t1 - t0) * gate, float(p),
                              float(rng.uniform(0.6, 1.0))))
    return notes


def _lead_line(score: Score, low: int, high: int, rng) -> list[Note]:
    """A melody mostly where the voice rests (answers), sometimes under it (counter-melody)."""
    singing = set(score.vocal_bars())
    bars = [b for b in range(score.bars) if b not in singing or rng.random() < 0.45]
    return melody(rng, score, bars, low, high, (1, 2, 2, 3, 4, 4, 6, 8),
                  phrase_bars=int(rng.choice([1, 2])), legato=float(rng.uniform(0.4, 0.9)))


# --------------------------------------------------------------------------- sounds
def _note_player(engine: str, rng: np.random.Generator, sr: int):
    """``play(midi, n, gate) -> (n,)`` for a polyphonic engine, with per-track parameters."""
    if engine in ("pad", "strings"):
        voices = int(rng.integers(2, 4))
        detune = rng.uniform(4, 14, voices) * rng.choice([-1, 1], voices)
        attack = rng.uniform(0.08, 0.5) if engine == "pad" else rng.uniform(0.1, 0.3)
        release = rng.uniform(0.2, 0.7)
        vib_rate = rng.uniform(4.5, 6.0, voices)
        vib_depth = 0.0 if engine == "pad" else rng.uniform(8, 20)

        def play(midi, n, gate):
            f0 = float(dsp.midi_to_hz(midi))
            out = np.zeros(n, dtype=np.float32)
            t = np.arange(n, dtype=np.float32) / np.float32(sr)
            for v in range(voices):
                if vib_depth > 0:
                    cents = detune[v] + vib_depth * np.sin(dsp.TWO_PI * vib_rate[v] * t + v)
                    f = f0 * np.exp2(cents / np.float32(1200.0))
                else:
                    f = f0 * 2 ** (detune[v] / 1200)
                out += dsp.saw(f, n, sr, rng.uniform(), limit=10000.0)
            return out * dsp.adsr(n, sr, attack, 1.0, 0.9, release, gate)
        return play, {"voices": voices, "attack": round(float(attack), 3)}

    if engine == "organ":
        ratios = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0])
        bars = rng.choice([0, 0, 2, 4, 6, 8], 9) / 8.0
        bars[1] = max(bars[1], 0.75)

        def play(midi, n, gate):
            f0 = float(dsp.midi_to_hz(midi))
            cyc = dsp.cycles(f0, n, sr, rng.uniform())
            keep = (ratios * f0 < min(6000.0, 0.45 * sr)) & (bars > 0)
            x = dsp.harmonic_sum(cyc, bars[keep], ratios[keep])
            env = dsp.adsr(n, sr, 0.005, 1.0, 1.0, 0.03, gate)
            click = np.zeros(n, dtype=np.float32)
            m = min(n, int(0.004 * sr))
            click[:m] = dsp.noise(rng, m) * 0.05
            return x * env + click
        return play, {"drawbars": [round(float(b) * 8) for b in bars]}

    if engine == "piano":
        stiffness = rng.uniform(1e-4, 5e-4)
        hammer = rng.uniform(0.1, 0.16)
        brightness = rng.uniform(0.8, 1.3)
        sustain_scale = rng.uniform(0.8, 2.5)

        def play(midi, n, gate):
            f0 = float(dsp.midi_to_hz(midi))
            cyc = dsp.cycles(f0, n, sr, 0.0)
            out = np.zeros(n, dtype=np.float32)
            limit = min(6000.0, 0.45 * sr)
            for k in range(1, 31):
                fk = k * f0 * np.sqrt(1 + stiffness * k * k)
                if fk > limit:
                    break
                amp = abs(np.sin(np.pi * k * hammer)) / k ** brightness
                tau = sustain_scale * (261.0 / f0) ** 0.5 / (1 + 0.35 * (k - 1))
                out += (dsp.sine_from_cycles(cyc, fk / f0) * np.float32(amp)
                        * dsp.exp_decay(n, sr, tau))
            g = int(gate * sr)
            if g < n:
                out[g:] *= dsp.exp_decay(n - g, sr, 0.08)
            return out
        return play, {"stiffness": float(stiffness), "hammer": round(float(hammer), 3)}

    if engine == "epiano":
        index = rng.uniform(1.0, 3.0)
        tine = rng.uniform(0.05, 0.3)
        decay = rng.uniform(0.8, 2.5)

        def play(midi, n, gate):
            f0 = float(dsp.midi_to_hz(midi))
            cyc = dsp.cycles(f0, n, sr, 0.0)
            idx = index * dsp.exp_decay(n, sr, 0.4)
            x = np.sin(dsp.TWO_PI * (cyc - np.floor(cyc)) + idx * dsp.sine_from_cycles(cyc))
            x = x.astype(np.float32) * dsp.exp_decay(n, sr, decay)
            if 14 * f0 < 0.45 * sr:
                x += tine * dsp.sine_from_cycles(cyc, 14.0) * dsp.exp_decay(n, sr, 0.02)
            g = int(gate * sr)
            if g < n:
                x[g:] *= dsp.exp_decay(n - g, sr, 0.1)
            return x
        return play, {"index": round(float(index), 3), "decay": round(float(decay), 3)}

    if engine == "guitar":
        pluck = rng.uniform(0.1, 0.3)
        decay = rng.uniform(0.8, 2.0)
        damping = rng.uniform(0.05, 0.25)

        def play(midi, n, gate):
            f0 = float(dsp.midi_to_hz(midi))
            cyc = dsp.cycles(f0, n, sr, 0.0)
            out = np.zeros(n, dtype=np.float32)
            for k in range(1, int(min(5000.0, 0.45 * sr) // f0) + 1):
                amp = abs(np.sin(np.pi * k * pluck)) / k
                tau = decay / (1 + damping * (k - 1) ** 1.5)
                out += dsp.sine_from_cycles(cyc, k) * np.float32(amp) * dsp.exp_decay(n, sr, tau)
            g = int(gate * sr)
            if g < n:
                out[g:] *= dsp.exp_decay(n - g, sr, 0.05)
            return out
        return play, {"pluck": round(float(pluck), 3)}

    if engine == "mallet":
        ratios = (np.array([1.0, 3.9, 9.2]) if rng.random() < 0.5 else np.array([1.0, 4.0, 10.0]))
        decay = rng.uniform(0.3, 1.5)

        def play(midi, n, gate):
            f0 = float(dsp.midi_to_hz(midi))
            cyc = dsp.cycles(f0, n, sr, 0.0)
            out = np.zeros(n, dtype=np.float32)
            for r, a, d in zip(ratios, (1.0, 0.35, 0.12), (1.0, 0.25, 0.08)):
                if r * f0 < 0.45 * sr:
                    out += a * dsp.sine_from_cycles(cyc, r) * dsp.exp_decay(n, sr, decay * d)
            return out
        return play, {"ratios": [float(r) for r in ratios], "decay": round(float(decay), 3)}
    raise ValueError(engine)


def _lead(notes: list[Note], score: Score, rng: np.random.Generator, sr: int,
          n_total: int) -> tuple[np.ndarray, dict]:
    """A monophonic synth: one oscillator per phrase so that legato notes glide."""
    wave = str(rng.choice(["saw", "square", "sine+saw"]))
    glide = rng.uniform(0.02, 0.08)
    vib_depth = rng.uniform(10, 40)
    vib_rate = rng.uniform(4.5, 6.5)
    cut = rng.uniform(1800, 4500)
    lowpass = dsp.butter("lowpass", cut, sr, order=2)
    out = np.zeros(n_total, dtype=np.float32)
    phrases: list[list[Note]] = []
    for note in notes:
        if phrases and note.start - phrases[-1][-1].end < 0.1:
            phrases[-1].append(note)
        else:
            phrases.append([note])
    for phrase in phrases:
        t0 = phrase[0].start
        n = int((phrase[-1].end - t0 + 0.3) * sr)
        t = t0 + np.arange(n) / sr
        starts = np.array([nt.start for nt in phrase])
        idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(phrase) - 1)
        target = np.array([nt.pitch for nt in phrase])[idx]
        a = float(np.exp(-1.0 / (glide * sr)))
        pitch = scipy.signal.lfilter([1 - a], [1, -a], target - target[0]) + target[0]
        since = t - starts[idx]
        pitch += vib_depth / 100 * np.clip((since - 0.2) / 0.3, 0, 1) * np.sin(
            dsp.TWO_PI * vib_rate * t)
        f = dsp.midi_to_hz(pitch)
        cyc = dsp.cycles(f, n, sr, rng.uniform())
        top = float(f.max())
        if wave == "saw":
            x = dsp.wavetable(cyc, "saw", top, sr, limit=10000.0)
        elif wave == "square":
            x = dsp.wavetable(cyc, "square", top, sr, limit=10000.0)
        else:
            x = dsp.sine_from_cycles(cyc) + 0.4 * dsp.wavetable(cyc, "saw", top, sr, limit=8000.0)
        env = np.zeros(n, dtype=np.float32)
        for nt in phrase:
            s0 = int((nt.start - t0) * sr)
            m = n - s0
            e = dsp.adsr(m, sr, 0.01, 0.3, 0.8, 0.08, nt.end - nt.start) * nt.velocity
            env[s0:] = np.maximum(env[s0:], e)
        y = dsp.filt(lowpass, x * env)
        dsp.add_at(out, dsp.fade(y, sr, 0.002, 0.02), round(t0 * sr))
    return out, {"wave": wave, "cutoff_hz": round(float(cut))}


def _instrument(engine: str, role: str, register: str, score: Score, rng: np.random.Generator,
                sr: int, n_total: int) -> tuple[np.ndarray, dict]:
    low, high = REGISTERS[register]
    if role == "sustain":
        notes = _sustained(score, low, high, int(rng.integers(3, 5)), rng)
    elif role == "comp":
        strum = float(rng.uniform(0.008, 0.025)) if engine == "guitar" else 0.0
        notes = _comped(score, low, high, int(rng.integers(3, 6)), rng, strum)
    elif role == "arp":
        notes = _arpeggio(score, low, high, rng)
    else:
        notes = _lead_line(score, low, min(high, low + 17), rng)
    if engine == "lead":
        x, params = _lead(notes, score, rng, sr, n_total)
    else:
        play, params = _note_player(engine, rng, sr)
        x = np.zeros(n_total, dtype=np.float32)
        tail = {"pad": 0.8, "strings": 0.6, "organ": 0.1, "piano": 0.5, "epiano": 0.5,
                "guitar": 0.4, "mallet": 0.6}[engine]
        cache: dict[tuple, np.ndarray] = {}
        for note in notes:
            gate = note.end - note.start
            n = int((gate + tail) * sr)
            key = (note.pitch, n)
            if key not in cache:
                cache[key] = dsp.fade(play(note.pitch, n, gate).astype(np.float32), sr, 0.001,
                                      0.02)
            dsp.add_at(x, cache[key] * np.float32(note.velocity), round(note.start * sr))
    # Instrument tone: a band that suits it, so the stem keeps a falling spectrum.
    hp = {"pad": 120, "strings": 150, "organ": 60, "piano": 50, "epiano": 70, "guitar": 90,
          "mallet": 100, "lead": 150}[engine]
    lp = {"pad": (1500, 5000), "strings": (2000, 4500), "organ": (3000, 6000),
          "piano": (4000, 8000), "epiano": (3000, 6000), "guitar": (2500, 6000),
          "mallet": (4000, 8000), "lead": (3000, 6000)}[engine]
    x = dsp.filt(dsp.butter("highpass", hp * rng.uniform(0.8, 1.5), sr), x)
    x = dsp.filt(dsp.butter("lowpass", rng.uniform(*lp), sr,
                            order=4 if engine in ("pad", "strings") else 2), x)
    if engine == "guitar" and rng.random() < 0.4:
        drive = rng.uniform(3, 12)
        x = np.tanh(drive * x / (np.abs(x).max() + 1e-9)).astype(np.float32)
        x = dsp.filt(dsp.butter("lowpass", rng.uniform(2500, 4500), sr, order=4), x)
        x = dsp.filt(dsp.peaking(rng.uniform(800, 2000), 4.0, 1.0, sr), x)
        params["overdrive"] = round(float(drive), 2)
    if engine in ("organ", "epiano") and rng.random() < 0.6:
        rate = rng.uniform(0.7, 7.0)
        t = np.arange(n_total) / sr
        x *= (1 + rng.uniform(0.1, 0.35) * np.sin(dsp.TWO_PI * rate * t)).astype(np.float32)
        params["tremolo_hz"] = round(float(rate), 2)
    meta = {"engine": engine, "role": role, "register": register, **params,
            "notes": len(notes)}
    return x, meta


def render(engines: list[str] | tuple[str, ...], score: Score, rng: np.random.Generator,
           sr: int) -> Part:
    """The "other" stem: two to four instruments drawn from ``engines`` (see :data:`ENGINES`)."""
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ValueError(f"unknown other engines {unknown}: use some of {', '.join(ENGINES)}")
    n_total = round(score.seconds * sr)
    count = min(len(engines), int(rng.choice([2, 2, 3, 3, 4])))
    chosen = [str(e) for e in rng.choice(list(engines), count, replace=False)]
    # At least one harmony instrument unless only melodic engines are allowed.
    harmonic = [e for e in engines if any(r != "melody" for r in ROLES[e])]
    if harmonic and all(ROLES[e] == ("melody",) for e in chosen):
        chosen[0] = str(rng.choice(harmonic))
    layers: list[Layer] = []
    metas = []
    vocal_register_used = False
    for i, engine in enumerate(chosen):
        role = str(rng.choice(ROLES[engine]))
        if role == "melody":
            register = "vocal" if rng.random() < 0.7 else "high"
        else:
            register = str(rng.choice(["low", "vocal", "vocal", "high"]))
        if i == len(chosen) - 1 and not vocal_register_used and rng.random() < 0.75:
            register = "vocal"
        vocal_register_used |= register == "vocal"
        x, meta = _instrument(engine, role, register, score, rng, sr, n_total)
        x = x / (np.sqrt(np.mean(x ** 2)) + 1e-9)
        level = float(rng.uniform(-6, 0))
        meta["level_db"] = round(level, 2)
        pan = float(rng.uniform(-0.7, 0.7))
        layers.append(Layer(f"{engine}{i}", x * np.float32(dsp.db_to_gain(level)), pan=pan,
                            width=float(rng.uniform(0.0, 1.0)) if role == "sustain" else 0.0))
        meta["pan"] = round(pan, 3)
        metas.append(meta)
    return Part(layers, {"engines": chosen, "instruments": metas})
