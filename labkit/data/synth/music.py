"""The score of a toy track: tempo, key, chord progression, song sections and melodies.

Time runs on a grid of sixteenth-note *steps* counted from the first downbeat (``Score.offset``
seconds, which may be negative: a track is an excerpt that can start inside a bar). With swing,
every odd step is late by ``swing`` of a sixteenth. Pitches are MIDI numbers (60 = middle C).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
STEPS_PER_BAR = 16

MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
MODE_WEIGHTS = {"major": 0.42, "minor": 0.38, "dorian": 0.1, "mixolydian": 0.1}

# Progressions as scale degrees (1 = tonic); common ones of pop, rock, soul and ballads.
PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "major": ((1, 5, 6, 4), (1, 6, 4, 5), (6, 4, 1, 5), (1, 4, 5, 4), (2, 5, 1, 1),
              (1, 4, 6, 5), (4, 1, 5, 6), (1, 3, 4, 5), (1, 5, 4, 4), (1, 1, 4, 5),
              (1, 4, 2, 5), (4, 5, 3, 6)),
    "minor": ((1, 6, 3, 7), (1, 4, 5, 1), (1, 7, 6, 7), (1, 6, 7, 1), (1, 4, 7, 3),
              (6, 7, 1, 1), (1, 3, 7, 4), (1, 4, 1, 5), (1, 1, 6, 5)),
    "dorian": ((1, 4, 1, 4), (1, 2, 1, 2), (1, 7, 4, 1), (1, 4, 7, 1)),
    "mixolydian": ((1, 7, 4, 1), (1, 4, 7, 4), (1, 7, 1, 4), (1, 5, 7, 4)),
}

_QUALITIES = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}
_SEVENTHS = {(4, 7, 11): "maj7", (4, 7, 10): "7", (3, 7, 10): "m7", (3, 6, 10): "m7b5",
             (3, 7, 11): "mMaj7", (3, 6, 9): "dim7", (4, 8, 11): "maj7#5"}


@dataclass
class Chord:
    """One chord of the progression: where it sounds and which pitch classes it holds."""

    start: float
    end: float
    degree: int
    root: int
    pitch_classes: tuple[int, ...]
    name: str

    def meta(self) -> dict:
        """JSON-ready description."""
        return {"start": round(self.start, 4), "end": round(self.end, 4), "degree": self.degree,
                "root": NOTE_NAMES[self.root], "root_pc": self.root,
                "pitch_classes": list(self.pitch_classes), "name": self.name}


@dataclass
class Section:
    """A stretch of bars with one character: how busy it is and whether the voice sings."""

    name: str
    first_bar: int
    bars: int
    energy: int
    vocals: bool


@dataclass
class Note:
    """A note: onset and release in seconds, MIDI pitch (fractional allowed), velocity in (0, 1]."""

    start: float
    end: float
    pitch: float
    velocity: float = 1.0
    legato: bool = False
    tags: dict = field(default_factory=dict)

    def meta(self) -> dict:
        """JSON-ready description."""
        out = {"start": round(self.start, 4), "end": round(self.end, 4),
               "pitch": round(float(self.pitch), 3), "velocity": round(self.velocity, 3)}
        out.update(self.tags)
        return out


@dataclass
class Score:
    """Everything the engines play from: timing, harmony and the song's sections."""

    seconds: float
    tempo: float
    swing: float
    offset: float
    key: int
    mode: str
    chords: list[Chord]
    sections: list[Section]
    bars: int

    @property
    def beat(self) -> float:
        """Seconds per beat (quarter note)."""
        return 60.0 / self.tempo

    @property
    def sixteenth(self) -> float:
        """Seconds per step."""
        return self.beat / 4.0

    @property
    def scale(self) -> tuple[int, ...]:
        """Pitch classes of the key's scale."""
        return tuple((self.key + p) % 12 for p in MODES[self.mode])

    def step_time(self, step: int) -> float:
        """Time in seconds of grid step ``step`` (swing delays odd steps)."""
        return self.offset + (step + (self.swing if step % 2 else 0.0)) * self.sixteenth

    def bar_start(self, bar: int) -> float:
        """Time in seconds of bar ``bar``'s downbeat."""
        return self.step_time(bar * STEPS_PER_BAR)

    def chord_at(self, t: float) -> Chord:
        """The chord sounding at time ``t`` (the first or last one outside the progression)."""
        for chord in self.chords:
            if t < chord.end:
                return chord
        return self.chords[-1]

    def section_of(self, bar: int) -> Section:
        """The section bar ``bar`` belongs to."""
        for section in self.sections:
            if section.first_bar <= bar < section.first_bar + section.bars:
                return section
        return self.sections[-1]

    def vocal_bars(self) -> list[int]:
        """Bars in which the voice may sing."""
        return [b for s in self.sections if s.vocals for b in range(s.first_bar,
                                                                     s.first_bar + s.bars)]

    def meta(self) -> dict:
        """JSON-ready description of timing, key, chords and sections."""
        return {
            "tempo": round(self.tempo, 3), "swing": round(self.swing, 4),
            "first_downbeat": round(self.offset, 4), "beats_per_bar": 4,
            "key": NOTE_NAMES[self.key], "key_pc": self.key, "mode": self.mode,
            "chords": [c.meta() for c in self.chords],
            "sections": [{"name": s.name, "first_bar": s.first_bar, "bars": s.bars,
                          "energy": s.energy, "vocals": s.vocals} for s in self.sections],
        }


def chord_pitch_classes(key: int, mode: str, degree: int, seventh: bool,
                        major_dominant: bool) -> tuple[int, ...]:
    """Pitch classes (root first) of the diatonic chord on ``degree`` (1-7) of ``key``'s ``mode``.

    ``major_dominant`` raises the third of a minor-mode V (harmonic minor), as songs usually do.
    """
    scale = MODES[mode]
    idx = [(degree - 1 + 2 * i) % 7 for i in range(4 if seventh else 3)]
    pcs = [(key + scale[i]) % 12 for i in idx]
    if mode == "minor" and degree == 5 and major_dominant:
        pcs[1] = (pcs[1] + 1) % 12
    return tuple(pcs)


def chord_name(pcs: tuple[int, ...]) -> str:
    """A lead-sheet name such as ``"Am7"`` for pitch classes with the root first."""
    root = pcs[0]
    iv = tuple((p - root) % 12 for p in pcs[1:])
    quality = _SEVENTHS.get(iv) if len(iv) == 3 else _QUALITIES.get(iv)
    return NOTE_NAMES[root] + (quality if quality is not None else "?")


def _plan_sections(rng: np.random.Generator, bars: int) -> list[Section]:
    """Song sections covering ``bars`` bars, starting somewhere inside a song."""
    kinds = ["intro", "verse", "chorus", "verse", "chorus", "break", "chorus", "outro"]
    pos = int(rng.choice([0, 1, 1, 2, 2, 3, 4]))
    sections = []
    bar = 0
    while bar < bars:
        name = kinds[pos % len(kinds)]
        length = int(rng.choice([2, 4, 4, 4, 8])) if name in ("verse", "chorus") else int(
            rng.choice([1, 2, 2, 4]))
        length = min(length, bars - bar)
        energy = {"intro": 0, "break": 0, "outro": 1, "verse": 1, "chorus": 2}[name]
        sings = {"intro": 0.15, "break": 0.4, "outro": 0.5, "verse": 0.95, "chorus": 1.0}[name]
        sections.append(Section(name, bar, length, energy, bool(rng.random() < sings)))
        bar += length
        pos += 1
    # The voice is the point of the data set: make sure it sings in at least half the bars.
    singing = sum(s.bars for s in sections if s.vocals)
    for s in sorted(sections, key=lambda s: -s.bars):
        if singing * 2 >= bars:
            break
        if not s.vocals:
            s.vocals = True
            singing += s.bars
    return sections


def make_score(rng: np.random.Generator, seconds: float) -> Score:
    """A random score for a track of ``seconds`` seconds."""
    tempo = float(rng.choice([rng.uniform(70, 100), rng.uniform(90, 130), rng.uniform(120, 170)],
                             p=[0.3, 0.45, 0.25]))
    swing = float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0.1, 0.35)]))
    beat = 60.0 / tempo
    offset = float(rng.uniform(-2.0 * beat, 1.0 * beat))
    mode = str(rng.choice(list(MODE_WEIGHTS), p=list(MODE_WEIGHTS.values())))
    key = int(rng.integers(12))
    bar_seconds = 4 * beat
    bars = max(1, math.ceil((seconds - offset) / bar_seconds))
    sections = _plan_sections(rng, bars)

    progressions = PROGRESSIONS[mode]
    verse_prog = progressions[rng.integers(len(progressions))]
    chorus_prog = (progressions[rng.integers(len(progressions))] if rng.random() < 0.5
                   else verse_prog)
    bars_per_chord = float(rng.choice([0.5, 1.0, 1.0, 1.0, 2.0]))
    sevenths = float(rng.choice([0.0, 0.0, 0.3, 0.7]))
    major_dominant = bool(rng.random() < 0.6)
    chords: list[Chord] = []
    t_bar = 0.0
    index = 0
    while t_bar < bars:
        section = next(s for s in sections if s.first_bar <= int(t_bar) < s.first_bar + s.bars)
        prog = chorus_prog if section.name == "chorus" else verse_prog
        degree = prog[index % len(prog)]
        pcs = chord_pitch_classes(key, mode, degree, bool(rng.random() < sevenths),
                                  major_dominant)
        start = offset + t_bar * bar_seconds
        end = offset + (t_bar + bars_per_chord) * bar_seconds
        chords.append(Chord(start, end, degree, pcs[0], pcs, chord_name(pcs)))
        t_bar += bars_per_chord
        index += 1
    return Score(seconds=seconds, tempo=tempo, swing=swing, offset=offset, key=key, mode=mode,
                 chords=chords, sections=sections, bars=bars)


# --------------------------------------------------------------------------- pitch helpers
def nearest_in(pitch: float, pitch_classes: tuple[int, ...] | list[int]) -> int:
    """The MIDI note closest to ``pitch`` whose pitch class is in ``pitch_classes``."""
    base = round(pitch)
    for d in (0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5, -6, 6):
        if (base + d) % 12 in pitch_classes:
            return base + d
    return base


def in_register(pc: int, low: int, high: int, rng: np.random.Generator | None = None) -> int:
    """A MIDI note of pitch class ``pc`` in [low, high] (random octave if ``rng`` is given)."""
    options = [m for m in range(low, high + 1) if m % 12 == pc]
    if not options:
        return low + (pc - low) % 12
    return int(options[0] if rng is None else rng.choice(options))


def voicing(chord: Chord, low: int, high: int, n_notes: int,
            previous: list[int] | None = None) -> list[int]:
    """``n_notes`` MIDI notes of ``chord`` inside [low, high], close to the ``previous`` voicing."""
    candidates = [m for m in range(low, high + 1) if m % 12 in chord.pitch_classes]
    if not candidates:
        return [low]
    centre = np.mean(previous) if previous else (low + high) / 2
    # Start from the chord tone nearest the centre of the last voicing, stack upwards, making
    # sure the root and third are present (they define the chord).
    start = min(range(len(candidates)), key=lambda i: abs(candidates[i] - centre + 6))
    notes = candidates[start:start + n_notes]
    if len(notes) < n_notes:
        notes = candidates[max(0, len(candidates) - n_notes):]
    return sorted(notes)


def melody(rng: np.random.Generator, score: Score, bars: list[int], low: int, high: int,
           durations: tuple[int, ...], phrase_bars: int = 2, legato: float = 0.6,
           leap: float = 0.15, jitter: float = 0.008) -> list[Note]:
    """A melody over ``bars`` in the range [low, high]: phrases separated by rests.

    ``durations`` are the note lengths in steps to draw from (the phrase's last note takes what is
    left, so phrases tend to end on a long note). Strong beats land on chord tones, other notes
    move mostly by scale steps, ``leap`` is the chance of a jump. ``legato`` is the chance that a
    note is held into the next one. Onsets are humanised by ``jitter`` seconds (Gaussian).
    """
    scale = score.scale
    scale_notes = [m for m in range(low - 12, high + 13) if m % 12 in scale]
    notes: list[Note] = []
    if not bars:
        return notes
    bar_set = set(bars)
    position = int(np.searchsorted(scale_notes, (low + high) / 2))
    bar = min(bars)
    while bar <= max(bars):
        if bar not in bar_set:
            bar += 1
            continue
        length = 1
        while length < phrase_bars and bar + length in bar_set:
            length += 1
        first = bar * STEPS_PER_BAR + int(rng.choice([0, 0, 1, 2, 2, 4]))
        last = (bar + length) * STEPS_PER_BAR - int(rng.choice([2, 3, 4, 4, 6, 8]))
        if rng.random() < 0.25 and length > 1:
            # Two shorter phrases with a breath between them.
            cut = bar * STEPS_PER_BAR + STEPS_PER_BAR - int(rng.choice([2, 4]))
            spans = [(first, cut), (cut + int(rng.choice([2, 4, 6])), last)]
        else:
            spans = [(first, last)]
        for lo, hi in spans:
            step = lo
            while hi - step >= 1:
                dur = int(rng.choice(durations))
                if hi - step - dur < min(durations):
                    dur = hi - step
                t0 = score.step_time(step)
                chord = score.chord_at(t0 + 1e-3)
                move = int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))
                if rng.random() < leap:
                    move = int(rng.choice([-4, -3, 3, 4, 5]))
                position = int(np.clip(position + move, 0, len(scale_notes) - 1))
                pitch = scale_notes[position]
                if pitch > high:
                    position -= 7
                elif pitch < low:
                    position += 7
                position = int(np.clip(position, 0, len(scale_notes) - 1))
                pitch = scale_notes[position]
                if step % 8 == 0 or step + dur >= hi:
                    pitch = nearest_in(pitch, chord.pitch_classes)
                    pitch = int(np.clip(pitch, low, high))
                    position = int(np.searchsorted(scale_notes, pitch))
                held = bool(rng.random() < legato) and step + dur < hi
                t1 = score.step_time(step + dur)
                gap = 0.0 if held else min(0.35 * (t1 - t0), 0.12)
                start = t0 + float(rng.normal(0.0, jitter))
                notes.append(Note(start, t1 - gap, float(pitch), float(rng.uniform(0.7, 1.0)),
                                  legato=held))
                step += dur
        bar += length
    # Legato notes run into the next onset exactly.
    for a, b in itertools.pairwise(notes):
        if a.legato:
            a.end = max(b.start, a.start + 0.02)
    return [n for n in notes if n.end > 0.0 and n.start < score.seconds]
