"""The drum stem: a kit (one of several engines) playing a groove with variations and fills.

Engines (each draws its own tuning, decays and filtering per track):

- ``acoustic``: pitch-swept sine kicks with a beater click, snares from drum-head modes plus
  filtered noise (the wires), noise hats, modal ride, swept toms.
- ``electronic``: 808/909-style: long saturated sine kicks, clap bursts, hats from six detuned
  square waves through a band-pass.
- ``lofi``: everything from shaped noise, then bit-crushed and sample-rate reduced and dulled.
- ``fm``: two-operator FM percussion (kicks, snares, metallic hats and bells).
- ``brushes``: a jazz kit played with brushes: swishes, soft felt kick, long ride.

Each piece is rendered as a few "round-robin" samples per track and placed on the grid, as a
drum sampler does; hits carry velocity and timing humanisation.
"""
from __future__ import annotations

import numpy as np

from labkit.data.synth import dsp
from labkit.data.synth.layers import Layer, Part
from labkit.data.synth.music import STEPS_PER_BAR, Score

ENGINES: tuple[str, ...] = ("acoustic", "electronic", "lofi", "fm", "brushes")

PIECES = ("kick", "snare", "clap", "rim", "hat", "open_hat", "ride", "crash", "tom_hi",
          "tom_mid", "tom_lo")

# Grooves: one character per sixteenth; x = accent, o = normal, g = ghost, . = rest.
PATTERNS: dict[str, dict[str, str]] = {
    "rock": {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.o.x.o.x.o.x.o."},
    "pop16": {"kick": "x.....x...x.....", "snare": "....x.......x...", "hat": "xgogxgogxgogxgog"},
    "four_floor": {"kick": "x...x...x...x...", "clap": "....x.......x...",
                   "hat": "g.g.g.g.g.g.g.g.", "open_hat": "..o...o...o...o."},
    "halftime": {"kick": "x.....o...x.....", "snare": "........x.......",
                 "hat": "x.o.x.o.x.o.x.o."},
    "breakbeat": {"kick": "x.........x..o..", "snare": "....x..g.g..x..g",
                  "hat": "x.o.x.o.x.o.x.o."},
    "bossa": {"kick": "o..oo..oo..oo..o", "rim": "x..x..x...x..x..", "hat": "gogogogogogogogo"},
    "trap": {"kick": "x......o..x.....", "snare": "........x.......", "hat": "x.o.x.o.xoxox.xo"},
    "jazz": {"ride": "x...x..ox...x..o", "hat": "....o.......o...", "kick": "g.........g....."},
    "one_drop": {"kick": "........x.......", "rim": "........x.......",
                 "hat": "x.o.x.o.x.o.x.o."},
    "funk": {"kick": "x..o..o...x..o..", "snare": "....x..g.g..x...", "hat": "xoxoxoxoxoxoxoxo"},
}
_VELOCITY = {"x": 1.0, "o": 0.7, "g": 0.35}


# --------------------------------------------------------------------------- sound sources
def _sweep(sr: int, length: float, f_start: float, f_end: float, sweep: float,
           decay: float) -> np.ndarray:
    """A sine whose pitch falls exponentially from ``f_start`` to ``f_end`` (toms, kicks)."""
    n = int(length * sr)
    t = np.arange(n) / sr
    freq = f_end + (f_start - f_end) * np.exp(-t / sweep)
    return dsp.sine(freq, n, sr) * dsp.exp_decay(n, sr, decay)


def _noise_hit(rng, sr: int, length: float, band: tuple[float, float], decay: float,
               attack: float = 0.0005, order: int = 2) -> np.ndarray:
    n = int(length * sr)
    x = dsp.filt(dsp.butter("bandpass", band, sr, order=order), dsp.noise(rng, n))
    env = dsp.exp_decay(n, sr, decay)
    a = max(int(attack * sr), 1)
    env[:a] *= np.linspace(0, 1, a, dtype=np.float32)
    return x * env


def _metal(rng, sr: int, length: float, base: float, decay: float,
           band: tuple[float, float]) -> np.ndarray:
    """Six detuned square waves (the TR-808 cymbal circuit) through a band-pass."""
    n = int(length * sr)
    ratios = np.array([1.0, 1.483, 1.800, 2.546, 2.630, 3.897]) * rng.uniform(0.97, 1.03, 6)
    x = sum(dsp.pulse(base * r, n, sr, 0.5, rng.uniform()) for r in ratios)
    x = dsp.filt(dsp.butter("bandpass", band, sr, order=2), x)
    return x * dsp.exp_decay(n, sr, decay)


def _modes(rng, sr: int, length: float, freqs, decays, amps) -> np.ndarray:
    n = int(length * sr)
    out = np.zeros(n, dtype=np.float32)
    for f, d, a in zip(freqs, decays, amps):
        if f < 0.45 * sr:
            out += a * dsp.sine(f, n, sr, rng.uniform()) * dsp.exp_decay(n, sr, d)
    return out


def _fm(sr: int, length: float, carrier, ratio: float, index: float, index_decay: float,
        decay: float) -> np.ndarray:
    """Two-operator FM; ``carrier`` may be an array (a pitch sweep)."""
    n = int(length * sr)
    carrier = np.broadcast_to(np.asarray(carrier, dtype=np.float64), (n,))
    mod_cycles = dsp.cycles(carrier * ratio, n, sr)
    idx = index * dsp.exp_decay(n, sr, index_decay)
    cyc = dsp.cycles(carrier, n, sr)
    x = np.sin(dsp.TWO_PI * (cyc - np.floor(cyc)) + idx * dsp.sine_from_cycles(mod_cycles))
    return x.astype(np.float32) * dsp.exp_decay(n, sr, decay)


def _clap(rng, sr: int, band: tuple[float, float], tail: float) -> np.ndarray:
    n = int((tail * 5 + 0.04) * sr)
    out = np.zeros(n, dtype=np.float32)
    env = np.zeros(n, dtype=np.float32)
    pos = 0
    for _ in range(int(rng.integers(3, 5))):
        m = int(0.008 * sr)
        env[pos:pos + m] = np.maximum(env[pos:pos + m], dsp.exp_decay(m, sr, 0.003))
        pos += int(rng.uniform(0.007, 0.013) * sr)
    env[pos:] = np.maximum(env[pos:], dsp.exp_decay(n - pos, sr, tail))
    out = dsp.filt(dsp.butter("bandpass", band, sr), dsp.noise(rng, n)) * env
    return out


# --------------------------------------------------------------------------- kits
def _acoustic(rng, sr):
    kick_f = rng.uniform(45, 65)
    snare_f = rng.uniform(160, 240)
    hat_band = (rng.uniform(5500, 7500), rng.uniform(9500, 12000))
    toms = sorted(rng.uniform([80, 105, 140], [100, 135, 190]))
    ride_modes = rng.uniform(350, 5500, 10)

    def kick():
        body = _sweep(sr, 0.6, kick_f * rng.uniform(2.0, 3.5), kick_f, rng.uniform(0.01, 0.03),
                      rng.uniform(0.12, 0.3))
        click = _noise_hit(rng, sr, 0.6, (1500, 5000), 0.003) * rng.uniform(0.1, 0.3)
        return dsp.filt(dsp.butter("lowpass", 7000, sr), body + click)

    def snare():
        body = _modes(rng, sr, 0.5, [snare_f, snare_f * 1.59, snare_f * 2.14],
                      [0.09, 0.06, 0.04], [1.0, 0.5, 0.25])
        wires = _noise_hit(rng, sr, 0.5, (1500, 7500), rng.uniform(0.08, 0.18))
        return dsp.filt(dsp.butter("lowpass", 10000, sr),
                        body + wires * rng.uniform(0.6, 1.3))

    def hat(decay):
        x = _noise_hit(rng, sr, decay * 6, hat_band, decay, order=2)
        return dsp.filt(dsp.butter("lowpass", 11000, sr), x)

    def ride():
        ping = _modes(rng, sr, 2.0, ride_modes * rng.uniform(0.99, 1.01, 10),
                      rng.uniform(0.4, 1.4, 10), rng.uniform(0.2, 1.0, 10))
        wash = _noise_hit(rng, sr, 2.0, (3000, 9000), 0.7) * 0.5
        return dsp.filt(dsp.butter("lowpass", 10000, sr), ping * 0.3 + wash)

    def crash():
        x = _noise_hit(rng, sr, 2.5, (2000, 9500), rng.uniform(0.6, 1.2), attack=0.002)
        return dsp.filt(dsp.butter("lowpass", 10000, sr), x)

    def tom(f):
        return (_sweep(sr, 0.8, f * 1.4, f, 0.04, rng.uniform(0.18, 0.4))
                + 0.2 * _noise_hit(rng, sr, 0.8, (500, 4000), 0.02))

    return {"kick": kick, "snare": snare, "clap": lambda: _clap(rng, sr, (900, 3500), 0.09),
            "rim": lambda: _modes(rng, sr, 0.2, [520, 1650], [0.015, 0.01], [1, 0.6]),
            "hat": lambda: hat(rng.uniform(0.02, 0.05)),
            "open_hat": lambda: hat(rng.uniform(0.2, 0.4)), "ride": ride, "crash": crash,
            "tom_hi": lambda: tom(toms[2]), "tom_mid": lambda: tom(toms[1]),
            "tom_lo": lambda: tom(toms[0])}


def _electronic(rng, sr):
    kick_f = rng.uniform(40, 58)
    drive = rng.uniform(1.0, 3.0)
    kick_decay = rng.uniform(0.25, 0.7)
    metal_base = rng.uniform(280, 420)
    hat_band = (rng.uniform(6000, 8000), rng.uniform(9500, 11500))

    def kick():
        x = _sweep(sr, 1.5, kick_f * rng.uniform(3, 6), kick_f, rng.uniform(0.005, 0.015),
                   kick_decay)
        return dsp.filt(dsp.butter("lowpass", 3000, sr), np.tanh(drive * x) / np.tanh(drive))

    def snare():
        f = rng.uniform(170, 230)
        tone = _modes(rng, sr, 0.4, [f, f * 1.85], [0.06, 0.04], [1.0, 0.6])
        hiss = dsp.filt(dsp.butter("highpass", 1500, sr),
                        _noise_hit(rng, sr, 0.4, (1500, 9000), rng.uniform(0.1, 0.2)))
        return tone + hiss * rng.uniform(0.7, 1.4)

    def hat(decay):
        x = _metal(rng, sr, decay * 6, metal_base, decay, hat_band)
        return dsp.filt(dsp.butter("lowpass", 11000, sr), x)

    def cymbal(decay):
        x = _metal(rng, sr, decay * 4, metal_base * 0.8, decay, (3500, 9500))
        x += 0.6 * _noise_hit(rng, sr, decay * 4, (4000, 9000), decay * 0.8)
        return dsp.filt(dsp.butter("lowpass", 10000, sr), x)

    def tom(f):
        return _sweep(sr, 1.0, f * 2.0, f, 0.03, rng.uniform(0.2, 0.5))

    return {"kick": kick, "snare": snare,
            "clap": lambda: _clap(rng, sr, (rng.uniform(800, 1200), 3000), rng.uniform(0.08, 0.2)),
            "rim": lambda: _modes(rng, sr, 0.15, [500, 1700], [0.012, 0.008], [1, 0.8]),
            "hat": lambda: hat(rng.uniform(0.025, 0.06)),
            "open_hat": lambda: hat(rng.uniform(0.2, 0.5)),
            "ride": lambda: cymbal(rng.uniform(0.6, 1.0)),
            "crash": lambda: cymbal(rng.uniform(1.0, 1.6)),
            "tom_hi": lambda: tom(rng.uniform(150, 200)), "tom_mid": lambda: tom(
                rng.uniform(110, 140)), "tom_lo": lambda: tom(rng.uniform(75, 100))}


def _lofi(rng, sr):
    kick_cut = rng.uniform(90, 160)

    def low_noise(cut, decay, length=0.6):
        n = int(length * sr)
        x = dsp.filt(dsp.butter("lowpass", cut, sr, order=4), dsp.noise(rng, n)) * 4
        return x * dsp.exp_decay(n, sr, decay)

    def kick():
        return (low_noise(kick_cut, rng.uniform(0.08, 0.2))
                + 0.5 * _sweep(sr, 0.6, 90, 50, 0.02, 0.12))

    def snare():
        return _noise_hit(rng, sr, 0.5, (rng.uniform(200, 400), rng.uniform(3000, 5000)),
                          rng.uniform(0.08, 0.2))

    band = (rng.uniform(2500, 4000), rng.uniform(6500, 8500))
    return {"kick": kick, "snare": snare,
            "clap": lambda: _clap(rng, sr, (700, 2500), 0.12),
            "rim": lambda: _noise_hit(rng, sr, 0.1, (1200, 2500), 0.01),
            "hat": lambda: _noise_hit(rng, sr, 0.3, band, rng.uniform(0.02, 0.05)),
            "open_hat": lambda: _noise_hit(rng, sr, 1.5, band, rng.uniform(0.15, 0.35)),
            "ride": lambda: _noise_hit(rng, sr, 2.0, (3000, 7000), 0.6),
            "crash": lambda: _noise_hit(rng, sr, 2.5, (2000, 7500), 0.9),
            "tom_hi": lambda: low_noise(400, 0.15) + 0.6 * _sweep(sr, 0.6, 220, 170, 0.03, 0.15),
            "tom_mid": lambda: low_noise(300, 0.18) + 0.6 * _sweep(sr, 0.6, 170, 125, 0.03,
                                                                     0.18),
            "tom_lo": lambda: low_noise(220, 0.2) + 0.6 * _sweep(sr, 0.6, 130, 90, 0.03, 0.2)}


def _fm_kit(rng, sr):
    kick_f = rng.uniform(42, 62)
    hat_c = rng.uniform(3000, 5000)

    def kick():
        n = int(0.8 * sr)
        t = np.arange(n) / sr
        carrier = kick_f + kick_f * 2.5 * np.exp(-t / 0.02)
        return _fm(sr, 0.8, carrier, rng.uniform(0.5, 1.5), rng.uniform(1, 3), 0.02,
                   rng.uniform(0.15, 0.4))

    def snare():
        f = rng.uniform(180, 260)
        x = _fm(sr, 0.5, f, rng.uniform(1.4, 2.4), rng.uniform(3, 7), 0.05, rng.uniform(0.07, 0.15))
        return x + 0.4 * _noise_hit(rng, sr, 0.5, (1500, 7000), 0.1)

    def metallic(decay, carrier, length=None):
        x = _fm(sr, length or decay * 5, carrier, rng.uniform(1.3, 1.5), rng.uniform(4, 9),
                decay * 2, decay)
        return dsp.filt(dsp.butter("lowpass", 10000, sr), x)

    def bell(decay):
        x = _fm(sr, decay * 3, rng.uniform(500, 1100), rng.uniform(1.4, 3.5), rng.uniform(2, 5),
                decay, decay)
        return x + 0.5 * metallic(decay * 0.6, hat_c, decay * 3)

    def tom(f):
        n = int(0.8 * sr)
        t = np.arange(n) / sr
        return _fm(sr, 0.8, f + f * 0.6 * np.exp(-t / 0.05), 1.0, 1.5, 0.05, rng.uniform(0.2, 0.4))

    return {"kick": kick, "snare": snare,
            "clap": lambda: _clap(rng, sr, (900, 3000), 0.1),
            "rim": lambda: _fm(sr, 0.15, rng.uniform(400, 700), 2.7, 3, 0.01, 0.015),
            "hat": lambda: metallic(rng.uniform(0.02, 0.05), hat_c),
            "open_hat": lambda: metallic(rng.uniform(0.2, 0.4), hat_c),
            "ride": lambda: bell(rng.uniform(0.6, 1.2)), "crash": lambda: bell(1.4),
            "tom_hi": lambda: tom(rng.uniform(150, 200)), "tom_mid": lambda: tom(
                rng.uniform(110, 140)), "tom_lo": lambda: tom(rng.uniform(75, 100))}


def _brushes(rng, sr):
    kick_f = rng.uniform(50, 70)
    ride_modes = rng.uniform(300, 4500, 12)

    def swish(length, decay, attack):
        x = _noise_hit(rng, sr, length, (300, rng.uniform(4000, 6500)), decay, attack=attack)
        return x

    def ride():
        ping = _modes(rng, sr, 3.0, ride_modes, rng.uniform(0.8, 2.2, 12),
                      rng.uniform(0.2, 1.0, 12))
        return ping * 0.35 + 0.4 * _noise_hit(rng, sr, 3.0, (2500, 8000), 1.0)

    return {"kick": lambda: dsp.filt(dsp.butter("lowpass", 1500, sr),
                                     _sweep(sr, 0.6, kick_f * 1.5, kick_f, 0.02,
                                            rng.uniform(0.15, 0.25))),
            "snare": lambda: swish(0.6, rng.uniform(0.12, 0.25), rng.uniform(0.015, 0.04)),
            "clap": lambda: swish(0.3, 0.05, 0.002),
            "rim": lambda: _modes(rng, sr, 0.15, [600, 1900], [0.01, 0.008], [1, 0.5]),
            "hat": lambda: _noise_hit(rng, sr, 0.3, (2000, 7000), 0.02),
            "open_hat": lambda: swish(1.0, 0.3, 0.01),
            "ride": ride, "crash": lambda: ride() + _noise_hit(rng, sr, 3.0, (2000, 8000), 1.2),
            "tom_hi": lambda: _sweep(sr, 0.6, 230, 180, 0.03, 0.2),
            "tom_mid": lambda: _sweep(sr, 0.6, 170, 135, 0.03, 0.25),
            "tom_lo": lambda: _sweep(sr, 0.6, 125, 95, 0.03, 0.3)}


_KITS = {"acoustic": _acoustic, "electronic": _electronic, "lofi": _lofi, "fm": _fm_kit,
         "brushes": _brushes}


def _crush(x: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Lo-fi: fewer bits, a sample-and-hold rate reduction, then a dull low-pass."""
    bits = int(rng.integers(6, 11))
    hold = int(rng.integers(2, 4))
    peak = np.abs(x).max() + 1e-9
    levels = 2 ** (bits - 1)
    y = np.round(x / peak * levels) / levels * peak
    y = np.repeat(y[::hold], hold)[: x.size]
    return dsp.filt(dsp.butter("lowpass", rng.uniform(4500, 7500), sr, order=4), y)


# --------------------------------------------------------------------------- the groove
def _fill(rng: np.random.Generator, steps: int) -> list[tuple[int, str, float]]:
    """Hits of a fill over the last ``steps`` sixteenths of a bar: (offset, piece, velocity)."""
    kind = rng.choice(["toms", "snare_roll", "mixed"])
    hits = []
    toms = ["tom_hi", "tom_hi", "tom_mid", "tom_mid", "tom_lo", "tom_lo", "tom_lo", "tom_lo"]
    for i in range(steps):
        if kind == "snare_roll":
            hits.append((i, "snare", 0.45 + 0.55 * (i + 1) / steps))
        elif kind == "toms":
            if i % 2 == 0 or rng.random() < 0.5:
                hits.append((i, toms[int(i * len(toms) / steps)], float(rng.uniform(0.75, 1.0))))
        elif rng.random() < 0.8:
            piece = "snare" if i < steps // 2 else toms[int(i * len(toms) / steps)]
            hits.append((i, piece, float(rng.uniform(0.7, 1.0))))
    return hits


def _groove(rng: np.random.Generator, score: Score) -> tuple[str, list[tuple[int, str, float]],
                                                              list[int]]:
    """The pattern's name, every hit as (step, piece, velocity), and the bars that end in a fill."""
    if score.swing > 0.15:
        name = str(rng.choice(["jazz", "funk", "pop16", "rock", "bossa", "halftime"]))
    else:
        name = str(rng.choice([p for p in PATTERNS if p != "jazz"]))
    pattern = PATTERNS[name]
    ghost = float(rng.uniform(0.0, 0.15))
    extra_kick = float(rng.uniform(0.0, 0.15))
    hits: list[tuple[int, str, float]] = []
    fills: list[int] = []
    silent_intro = rng.random() < 0.4
    for bar in range(score.bars):
        section = score.section_of(bar)
        base = bar * STEPS_PER_BAR
        last_of_section = bar == section.first_bar + section.bars - 1
        fill = (last_of_section and section.bars >= 2 and rng.random() < 0.75) or (
            bar % 4 == 3 and rng.random() < 0.25)
        fill_steps = int(rng.choice([4, 4, 8])) if fill else 0
        if section.energy == 0 and section.name == "intro" and silent_intro:
            continue
        if bar == section.first_bar and section.energy >= 1 and bar > 0:
            hits.append((base, "crash", float(rng.uniform(0.8, 1.0))))
        for piece, row in pattern.items():
            if section.energy == 0 and piece not in ("hat", "ride", "kick", "rim"):
                continue
            use = piece
            if piece == "hat" and section.energy == 2 and name != "jazz" and rng.random() < 0.3:
                use = "ride"
            for s, ch in enumerate(row):
                if ch == "." or s >= STEPS_PER_BAR - fill_steps:
                    continue
                hits.append((base + s, use, _VELOCITY[ch] * float(rng.uniform(0.85, 1.1))))
        for s in range(STEPS_PER_BAR - fill_steps):
            if s % 2 == 1 and rng.random() < ghost and section.energy > 0:
                hits.append((base + s, "snare", float(rng.uniform(0.2, 0.35))))
            if s % 4 == 2 and rng.random() < extra_kick and section.energy > 0:
                hits.append((base + s, "kick", float(rng.uniform(0.6, 0.9))))
        if fill_steps:
            fills.append(bar)
            first = base + STEPS_PER_BAR - fill_steps
            hits += [(first + i, piece, v) for i, piece, v in _fill(rng, fill_steps)]
    return name, hits, fills


def render(engine: str, score: Score, rng: np.random.Generator, sr: int) -> Part:
    """The drum stem's layers for ``score`` with kit ``engine`` (one of :data:`ENGINES`)."""
    if engine not in _KITS:
        raise ValueError(f"unknown drum engine {engine!r}: use one of {', '.join(ENGINES)}")
    n = round(score.seconds * sr)
    kit = _KITS[engine](rng, sr)
    name, hits, fills = _groove(rng, score)
    used = sorted({piece for _, piece, _ in hits})
    # A few round-robin samples per piece, each normalised to peak 1 and given the piece's level.
    levels = {"kick": 0.0, "snare": rng.uniform(-3, 1), "clap": rng.uniform(-5, -1),
              "rim": rng.uniform(-10, -4), "hat": rng.uniform(-18, -10),
              "open_hat": rng.uniform(-17, -10), "ride": rng.uniform(-17, -10),
              "crash": rng.uniform(-15, -8), "tom_hi": rng.uniform(-5, 0),
              "tom_mid": rng.uniform(-5, 0), "tom_lo": rng.uniform(-5, 0)}
    samples = {}
    for piece in used:
        variants = []
        for _ in range(3):
            x = kit[piece]()
            x = x / (np.abs(x).max() + 1e-9) * dsp.db_to_gain(levels[piece])
            variants.append(dsp.fade(x.astype(np.float32), sr, 0.0, 0.01))
        samples[piece] = variants
    groups = {"kick": ("kick",), "snare": ("snare", "clap", "rim"), "hats": ("hat", "open_hat"),
              "cymbals": ("ride", "crash"), "tom_hi": ("tom_hi",), "tom_mid": ("tom_mid",),
              "tom_lo": ("tom_lo",)}
    buffers = {g: np.zeros(n, dtype=np.float32) for g in groups}
    group_of = {p: g for g, ps in groups.items() for p in ps}
    timing = float(rng.uniform(0.002, 0.007))
    for step, piece, velocity in hits:
        t = score.step_time(step) + float(rng.normal(0.0, timing))
        x = samples[piece][int(rng.integers(3))]
        dsp.add_at(buffers[group_of[piece]], x * np.float32(min(velocity, 1.2) ** 1.5),
                   round(t * sr))
    if engine == "lofi":
        buffers = {g: _crush(b, rng, sr) for g, b in buffers.items()}
    side = float(rng.choice([-1.0, 1.0]))
    pans = {"kick": 0.0, "snare": float(rng.normal(0, 0.05)),
            "hats": side * float(rng.uniform(0.2, 0.55)),
            "cymbals": -side * float(rng.uniform(0.2, 0.6)),
            "tom_hi": side * 0.4, "tom_mid": side * 0.1, "tom_lo": -side * 0.35}
    layers = [Layer(g, b, pan=pans[g], width=0.0) for g, b in buffers.items() if b.any()]
    meta = {"engine": engine, "pattern": name, "fills": fills,
            "piece_levels_db": {p: round(float(levels[p]), 2) for p in used},
            "hits": len(hits), "timing_jitter": round(timing, 4)}
    return Part(layers, meta)
