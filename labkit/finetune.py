"""Fine-tune a separator on one song (notebook 06), and separate the whole song afterwards.

A model trained on many songs knows "voice" in general; one song's singer, instruments and mix
are particular. When a user has the stems of part of a song (or of a similar one), a few minutes
of training on them adapts the model to that song. The pieces:

- :func:`load_song` reads a mixture and the stems the user has, in one of three sets (vocals only,
  vocals + accompaniment, or the four stems), and aligns them with the mixture: stems are
  resampled to its rate and converted to its channels; lengths that differ by at most
  ``tolerance_seconds`` are trimmed or zero-padded (each change is recorded in ``song.notes``);
  larger differences are refused with :class:`StemAlignmentError`.
- :func:`time_split` cuts the song in time: the first part trains, the last part is held out.
  A guard band between the two, as long as the model's receptive field
  (:func:`receptive_field`), keeps every sample the model looks at while producing a held-out
  sample out of the training audio. :func:`check_no_leakage` refuses to evaluate on audio that
  was trained on (:class:`LeakageError`) unless ``allow_overlap=True`` is passed explicitly.
- Augmentations are small pure functions of a ``numpy.random.Generator``:
  :func:`random_gain`, :func:`swap_channels`, :func:`random_crop` and :func:`random_remix` (each
  stem from its own random offset: new mixtures from the song's own material).
  :class:`SongSegments` draws training examples with them.
- :func:`finetune` runs the shared :class:`labkit.train.Trainer` (epochs x steps_per_epoch,
  ``lr``, an optional wall-clock budget, optionally with the encoder frozen by
  :func:`freeze_encoder`); :func:`evaluate_holdout` scores a model on the held-out part beside
  the IRM2 oracle.
- :func:`finetune_song` does it all: load, split, score the shipped model, fine-tune, score
  again, and separate the whole song into ``<out>/<name>_separated/<name>_<stem>.wav``.
  Without stems there is nothing to fine-tune on: it says so (:class:`NothingToFineTuneWarning`)
  and separates with the shipped model.

Shapes follow labkit's contracts: audio ``(channels, samples)``, stems ``(stems, channels,
samples)``, batches ``(batch, channels, samples)`` and ``(batch, stems, channels, samples)``.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labkit.errors import AudioError, LabkitError

__all__ = [
    "ENCODER_PARTS", "STEM_SETS", "Augmentation", "FinetuneResult", "LeakageError",
    "NothingToFineTuneWarning", "Song", "SongResult", "SongSegments", "StemAlignmentError",
    "TimeSplit", "align_stem", "check_no_leakage", "evaluate_holdout", "finetune",
    "finetune_song", "freeze_encoder", "load_song", "plot_scores", "plot_split", "random_crop",
    "random_gain",
    "random_remix", "receptive_field", "separation_loss", "song_id", "swap_channels",
    "target_groups", "time_split",
]

STEM_SETS: dict[str, tuple[str, ...]] = {
    "vocals": ("vocals",),
    "vocals+accompaniment": ("vocals", "accompaniment"),
    "four stems": ("vocals", "drums", "bass", "other"),
}
"""The stem sets a user can fine-tune with (a name -> the stems given)."""

_FOUR = STEM_SETS["four stems"]
_ACCOMPANIMENT = ("drums", "bass", "other")


class LeakageError(LabkitError):
    """Evaluation was asked on audio that was trained on (or within the guard band around it)."""


class StemAlignmentError(AudioError):
    """Stems that cannot be lined up with the mixture (length, channels, or which stems)."""


class NothingToFineTuneWarning(UserWarning):
    """A song came without stems: the shipped model separates it unchanged."""


# =========================================================================== the song
@dataclass
class Song:
    """One song in memory: the mixture and the stems the user has, aligned with it.

    ``mixture``: float32 ``(channels, samples)`` at ``sr``; ``stems``: name -> float32
    ``(channels, samples)``, same shape (empty without stems); ``notes``: what alignment changed
    (resampling, channels, trimming), one line each; ``path``: the mixture's file, if any.
    """

    name: str
    mixture: np.ndarray
    sr: int
    stems: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def samples(self) -> int:
        """Length in samples."""
        return int(self.mixture.shape[-1])

    @property
    def seconds(self) -> float:
        """Length in seconds."""
        return self.samples / self.sr

    @property
    def stem_set(self) -> str | None:
        """Which of :data:`STEM_SETS` the stems are (None without stems)."""
        if not self.stems:
            return None
        for name, stems in STEM_SETS.items():
            if set(stems) == set(self.stems):
                return name
        raise StemAlignmentError(_stem_set_message(list(self.stems)))

    def targets(self, names: Sequence[str]) -> np.ndarray:
        """The targets ``names`` as float32 ``(len(names), channels, samples)``.

        Each is a given stem, ``"accompaniment"`` (given, or the sum of drums, bass and other, or
        the mixture minus the vocals) or, with vocals + accompaniment given, nothing finer.
        Raises StemAlignmentError for a target the stems cannot provide.
        """
        out = []
        for name in names:
            if name in self.stems:
                out.append(self.stems[name])
            elif name == "accompaniment" and all(s in self.stems for s in _ACCOMPANIMENT):
                out.append(sum(self.stems[s] for s in _ACCOMPANIMENT))
            elif name == "accompaniment" and "vocals" in self.stems:
                # everything in the mixture that is not the singer
                out.append(self.mixture - self.stems["vocals"])
            else:
                have = ", ".join(self.stems) or "none"
                raise StemAlignmentError(
                    f"song {self.name!r}: target {name!r} cannot be made from the stems given "
                    f"({have}); drums, bass and other need all four stems")
        return np.stack(out).astype(np.float32, copy=False)


def _stem_set_message(names: Sequence[str]) -> str:
    sets = "; ".join(f"{k}: {', '.join(v)}" for k, v in STEM_SETS.items())
    return (f"stems {', '.join(names)} are not a set labkit can fine-tune with; give one of "
            f"({sets})")


def song_id(mixture: np.ndarray, sr: int) -> str:
    """A short id of the song's audio (12 hex digits of a sha256 of its samples and rate), used
    for ``checkpoints/single_audio_<id>/``: the same audio gives the same folder."""
    digest = hashlib.sha256(np.ascontiguousarray(mixture, dtype=np.float32).tobytes())
    digest.update(str(int(sr)).encode())
    return digest.hexdigest()[:12]


def _read(source: Any, what: str, sr: int | None) -> tuple[np.ndarray, int, Path | None]:
    """(audio (channels, samples) float32, rate, path) from a path or an array."""
    from labkit.audio import load, validate

    if isinstance(source, (str, Path)):
        audio, rate = load(source)
        return audio, rate, Path(source)
    if hasattr(source, "detach"):
        source = source.detach().cpu().numpy()
    validate(source, name=what)
    audio = np.asarray(source, dtype=np.float32)
    audio = audio[None] if audio.ndim == 1 else audio
    if audio.ndim != 2:
        raise AudioError(f"{what} has shape {audio.shape}; expected (channels, samples)")
    if sr is None:
        raise AudioError(f"{what} is an array: give its sample rate (sr=...)")
    return audio, int(sr), None


def align_stem(stem: np.ndarray, stem_sr: int, mixture: np.ndarray, sr: int, name: str,
               tolerance_seconds: float = 0.1) -> tuple[np.ndarray, list[str]]:
    """Line ``stem`` ``(channels, samples)`` at ``stem_sr`` up with ``mixture`` at ``sr``.

    Resamples to ``sr``, converts 1 <-> N channels to the mixture's, and trims or zero-pads the
    end when the lengths differ by at most ``tolerance_seconds`` (encoders add or drop a few
    milliseconds). Returns ``(aligned (channels, samples) float32, notes)``, a note per change.
    Raises :class:`StemAlignmentError` naming ``name`` for larger length differences or channel
    layouts that cannot be converted.
    """
    from labkit.audio import resample, to_channels

    notes = []
    if stem_sr != sr:
        stem = resample(stem, stem_sr, sr)
        notes.append(f"{name}: resampled from {stem_sr} Hz to the mixture's {sr} Hz")
    channels = mixture.shape[0]
    if stem.shape[0] != channels:
        try:
            stem = to_channels(stem, channels)
        except AudioError as exc:
            raise StemAlignmentError(
                f"{name} has {stem.shape[0]} channels and the mixture {channels}: {exc}") from exc
        notes.append(f"{name}: converted to the mixture's {channels} channel(s)")
    have, want = stem.shape[-1], mixture.shape[-1]
    if have != want:
        difference = abs(have - want) / sr
        if difference > tolerance_seconds:
            raise StemAlignmentError(
                f"{name} lasts {have / sr:.3f} s but the mixture {want / sr:.3f} s (at {sr} Hz): "
                f"{difference:.3f} s apart, more than the tolerance of {tolerance_seconds} s. "
                "Stems must be exports of the same song, starting at the same time; cut them to "
                "the mixture (or raise tolerance_seconds if the difference is only silence at "
                "the end).")
        action = "trimmed" if have > want else "zero-padded"
        stem = stem[:, :want] if have > want else np.pad(stem, ((0, 0), (0, want - have)))
        notes.append(f"{name}: {action} by {abs(have - want)} samples ({difference * 1000:.1f} "
                     "ms) to the mixture's length")
    return np.ascontiguousarray(stem, dtype=np.float32), notes


def _check_sum(song: Song, tolerance_db: float = -20.0) -> None:
    """Warn when the stems do not add up to the mixture (a different mix, gains, a limiter)."""
    parts = None
    if song.stem_set == "four stems":
        parts = sum(song.stems[s] for s in _FOUR)
    elif song.stem_set == "vocals+accompaniment":
        parts = song.stems["vocals"] + song.stems["accompaniment"]
    if parts is None:
        return
    energy = float(np.sum(song.mixture.astype(np.float64) ** 2))
    residual = float(np.sum((song.mixture.astype(np.float64) - parts) ** 2))
    if energy > 0 and residual > 0:
        level = 10 * math.log10(residual / energy)
        if level > tolerance_db:
            warnings.warn(
                f"song {song.name!r}: the stems add up to the mixture only within {level:.1f} dB "
                f"(the residual is more than {tolerance_db:.0f} dB below the mixture); were they "
                "exported with other gains or effects than the mix? Fine-tuning learns from the "
                "stems as given.", stacklevel=3)


def load_song(mixture: Any, stems: Mapping[str, Any] | None = None, sr: int | None = None,
              name: str | None = None, tolerance_seconds: float = 0.1) -> Song:
    """Read a song: its mixture and (optionally) stems, aligned with the mixture.

    ``mixture``: a file path or an array ``(channels, samples)`` / ``(samples,)`` (then ``sr``
    is its rate). ``stems``: name -> path or array (arrays at ``sr``, or at the mixture's rate
    when it came from a file), one of the sets in :data:`STEM_SETS`; None or empty: no stems.
    Each stem goes through :func:`align_stem`. ``name`` defaults to the file name without its
    extension (``"song"`` for arrays). Warns when the stems do not add up to the mixture.
    """
    audio, rate, path = _read(mixture, "mixture", sr)
    song = Song(name=name or (path.stem if path is not None else "song"), mixture=audio,
                sr=rate, path=path)
    stems = {k: v for k, v in (stems or {}).items() if v is not None}
    if not stems:
        return song
    unknown = [k for k in stems if k not in (*_FOUR, "accompaniment")]
    if unknown or not any(set(v) == set(stems) for v in STEM_SETS.values()):
        raise StemAlignmentError(_stem_set_message(list(stems)))
    for stem_name, source in stems.items():
        stem, stem_rate, stem_path = _read(source, stem_name, sr if sr is not None else rate)
        label = f"{stem_name} ('{stem_path}')" if stem_path is not None else stem_name
        aligned, notes = align_stem(stem, stem_rate, audio, rate, label, tolerance_seconds)
        song.stems[stem_name] = aligned
        song.notes.extend(notes)
    _check_sum(song)
    return song


# =========================================================================== time split
@dataclass(frozen=True)
class TimeSplit:
    """A split of a song in time, in samples at rate ``sr``.

    Training audio is ``[0, train_stop)``; the guard band ``[train_stop, test_start)`` is used
    by neither; the held-out audio is ``[test_start, samples)``.
    """

    samples: int
    sr: int
    train_stop: int
    test_start: int

    @property
    def train(self) -> tuple[int, int]:
        """``(start, stop)`` of the training audio."""
        return (0, self.train_stop)

    @property
    def test(self) -> tuple[int, int]:
        """``(start, stop)`` of the held-out audio."""
        return (self.test_start, self.samples)

    @property
    def guard(self) -> int:
        """Samples between training and held-out audio."""
        return self.test_start - self.train_stop

    def at(self, sr: int) -> TimeSplit:
        """The same split at another rate: training ends no later and the held-out part starts
        no earlier than here (floor and ceiling), so no rounding creates an overlap."""
        scale = sr / self.sr
        return TimeSplit(samples=math.ceil(self.samples * scale), sr=int(sr),
                         train_stop=math.floor(self.train_stop * scale),
                         test_start=min(math.ceil(self.test_start * scale),
                                        math.ceil(self.samples * scale)))

    def describe(self) -> str:
        """One line: the three parts in seconds."""
        s = self.sr
        return (f"train 0.00-{self.train_stop / s:.2f} s, guard {self.train_stop / s:.2f}-"
                f"{self.test_start / s:.2f} s, held out {self.test_start / s:.2f}-"
                f"{self.samples / s:.2f} s")


def time_split(samples: int, sr: int, train_fraction: float = 0.7, guard_samples: int = 0,
               min_seconds: float = 0.5) -> TimeSplit:
    """Split ``samples`` in time: the last ``1 - train_fraction`` is held out, the training part
    ends ``guard_samples`` before it.

    The held-out part starts at ``round(train_fraction * samples)``. Raises LabkitError when the
    fraction is not in (0, 1) or either part would be shorter than ``min_seconds``.
    """
    if not 0 < train_fraction < 1:
        raise LabkitError(f"train_fraction={train_fraction!r}; expected a number in (0, 1), e.g. "
                          "0.7 (the first 70 % trains)")
    if isinstance(guard_samples, bool) or not isinstance(guard_samples, (int, np.integer)) \
            or guard_samples < 0:
        raise LabkitError(f"guard_samples={guard_samples!r}; expected a whole number >= 0")
    test_start = round(train_fraction * samples)
    train_stop = test_start - int(guard_samples)
    shortest = round(min_seconds * sr)
    if train_stop < shortest or samples - test_start < shortest:
        raise LabkitError(
            f"a {samples / sr:.2f} s song split at {train_fraction:.0%} with a guard of "
            f"{guard_samples / sr:.2f} s leaves {max(train_stop, 0) / sr:.2f} s to train on and "
            f"{(samples - test_start) / sr:.2f} s held out; each needs at least {min_seconds} s. "
            "Use a longer song, another train_fraction or a shorter guard.")
    return TimeSplit(samples=int(samples), sr=int(sr), train_stop=train_stop,
                     test_start=test_start)


def check_no_leakage(region: tuple[int, int], trained: Sequence[tuple[int, int]],
                     guard: int = 0, allow_overlap: bool = False, sr: int | None = None) -> bool:
    """Refuse to evaluate on ``region`` = ``(start, stop)`` when it comes within ``guard``
    samples of any ``trained`` range ``(start, stop)``.

    Raises :class:`LeakageError` saying where they meet, unless ``allow_overlap=True`` (then it
    warns and returns True: the scores are on trained audio and must be labelled so). Returns
    False when there is no overlap.
    """
    start, stop = region
    unit = (lambda n: f"{n / sr:.2f} s") if sr else (lambda n: f"sample {n}")
    for t_start, t_stop in trained:
        if start < t_stop + guard and t_start - guard < stop:
            message = (f"evaluating on {unit(start)}-{unit(stop)} would use audio trained on "
                       f"({unit(t_start)}-{unit(t_stop)}, guard {guard} samples): the score "
                       "would measure memorisation, not separation")
            if not allow_overlap:
                raise LeakageError(message + ". Evaluate on the held-out part (split.test), or "
                                   "pass allow_overlap=True to do it anyway and label the result.")
            warnings.warn(message + " (allow_overlap=True)", stacklevel=2)
            return True
    return False


def receptive_field(model: Any, samples: int | None = None, seed: int = 0) -> int:
    """How far (in samples at ``model.sample_rate``) an output sample of ``model`` looks.

    Measured, not computed: the gradient of the output at the middle of a random input of
    ``samples`` samples (default: the model's chunk) with respect to that input is nonzero
    exactly where the input can influence it. Returns the larger one-sided extent. When the
    influence reaches the edge of the input, the model sees the whole chunk it is given, and
    the chunk's length is returned (what :func:`labkit.separate.separate` feeds it).
    """
    import torch

    from labkit.separate import DEFAULT_CHUNK_SECONDS

    if samples is None:
        seconds = getattr(model, "chunk_seconds", None) or DEFAULT_CHUNK_SECONDS
        samples = round(seconds * model.sample_rate)
    if hasattr(model, "valid_length"):
        samples = int(model.valid_length(samples))
    generator = torch.Generator().manual_seed(seed)
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = (0.1 * torch.randn(1, model.channels, samples, generator=generator)).to(device)
    x.requires_grad_()
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            y = model(x)
            centre = samples // 2
            # Random weights per source and channel: a plain sum of the sources of a masking
            # model is the mixture itself, whose gradient shows only the direct path.
            weights = torch.randn(y.shape[:-1], generator=generator).to(device)
            # autograd.grad, not backward(): the model's own .grad stays untouched
            (gradient,) = torch.autograd.grad((y[..., centre] * weights).sum(), x)
    finally:
        model.train(was_training)
    influence = gradient.abs().sum(dim=(0, 1)).cpu()
    where = torch.nonzero(influence > 0).flatten()
    if where.numel() == 0:
        return 0
    first, last = int(where[0]), int(where[-1])
    edge = samples // 100  # padding at the edges (reflection, frame centring) blurs the last few
    if first <= edge or last >= samples - 1 - edge:
        return samples
    return max(centre - first, last - centre)


# =========================================================================== augmentation
def random_gain(audio: np.ndarray, rng: np.random.Generator, low_db: float = -6.0,
                high_db: float = 3.0) -> np.ndarray:
    """Scale ``audio`` ``(..., samples)`` by one gain drawn uniformly in dB from [low_db,
    high_db)."""
    return (audio * np.float32(10 ** (rng.uniform(low_db, high_db) / 20))).astype(np.float32)


def swap_channels(audio: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Reverse the channel order of ``audio`` ``(..., channels, samples)`` with probability
    ``p`` (left <-> right; mono is returned as it is)."""
    if audio.shape[-2] > 1 and rng.random() < p:
        return audio[..., ::-1, :].copy()
    return audio


def random_crop(audio: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """A random excerpt of ``length`` samples of ``audio`` ``(..., samples)`` (zero-padded at the
    end when the audio is shorter); every start in ``[0, samples - length]`` is equally likely."""
    n = audio.shape[-1]
    start = int(rng.integers(0, max(n - length, 0) + 1))
    piece = audio[..., start:start + length]
    if piece.shape[-1] < length:
        piece = np.pad(piece, [(0, 0)] * (piece.ndim - 1) + [(0, length - piece.shape[-1])])
    return piece


def random_remix(stems: np.ndarray, rng: np.random.Generator, length: int,
                 low_db: float = -6.0, high_db: float = 3.0) -> np.ndarray:
    """A new mixture's stems from one song: each stem of ``stems`` ``(stems, channels,
    samples)`` cut at its own random offset (:func:`random_crop`) and scaled by its own random
    gain (:func:`random_gain`). Returns float32 ``(stems, channels, length)``; their sum is the
    new mixture, which never occurred in the song but has its voice and instruments."""
    return np.stack([random_gain(random_crop(stem, rng, length), rng, low_db, high_db)
                     for stem in stems]).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """How :class:`SongSegments` turns the song's stems into training examples.

    ``remix``: probability that an example is a :func:`random_remix` (otherwise an excerpt of
    the song as it is, each stem from the same offset); ``gain_db``: range of the per-stem gains
    (None: no gain); ``swap_channels``: probability of swapping left and right.
    ``Augmentation.none()`` gives plain excerpts.
    """

    remix: float = 0.5
    gain_db: tuple[float, float] | None = (-6.0, 3.0)
    swap_channels: float = 0.5

    @classmethod
    def none(cls) -> Augmentation:
        """No augmentation: excerpts of the song as it is."""
        return cls(remix=0.0, gain_db=None, swap_channels=0.0)

    def __call__(self, stems: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
        """An example ``(stems, channels, length)`` from ``stems`` ``(stems, channels,
        samples)``."""
        low, high = self.gain_db if self.gain_db is not None else (0.0, 0.0)
        if rng.random() < self.remix:
            out = random_remix(stems, rng, length, low, high)
        else:
            out = random_crop(stems, rng, length)
            if self.gain_db is not None:
                out = np.stack([random_gain(s, rng, low, high) for s in out])
        return swap_channels(out, rng, self.swap_channels).astype(np.float32, copy=False)


class SongSegments:
    """Training examples from one song's training audio (a map-style torch data set).

    ``stems``: float32 ``(targets, channels, samples)`` (the training part only, at the model's
    rate and channels). Item ``i`` of epoch ``e`` depends only on ``(seed, e, i)`` (the Trainer
    calls :meth:`set_epoch`), so runs repeat and resume exactly. Returns ``(mixture (channels,
    length), targets (targets, channels, length))`` tensors with the mixture the sum of the
    targets. ``length`` examples per epoch: ``items`` (e.g. steps_per_epoch x batch_size).
    """

    def __init__(self, stems: np.ndarray, length: int, items: int,
                 augmentation: Augmentation | None = None, seed: int = 0) -> None:
        stems = np.asarray(stems, dtype=np.float32)
        if stems.ndim != 3:
            raise LabkitError(f"SongSegments: stems have shape {stems.shape}; expected (targets, "
                              "channels, samples)")
        if length < 1 or items < 1:
            raise LabkitError(f"SongSegments: length={length}, items={items}; expected >= 1")
        self.stems, self.length, self.items = stems, int(length), int(items)
        self.augmentation = augmentation if augmentation is not None else Augmentation()
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the examples of epoch ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        if not 0 <= index < self.items:
            raise IndexError(f"index {index} is outside [0, {self.items})")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        targets = self.augmentation(self.stems, rng, self.length)
        return torch.from_numpy(targets.sum(axis=0)), torch.from_numpy(targets)


# =========================================================================== the model
ENCODER_PARTS = ("analysis", "input_norm", "inlet", "encoder")
"""Submodules :func:`freeze_encoder` freezes where a model has them (on the model itself or on
its ``unet``): the learned filterbank, the input normalisation and 1x1 inlet, and the encoder."""


def freeze_encoder(model: Any) -> list[str]:
    """Freeze the encoder of ``model``: its parameters stop training, its batch norm statistics
    stop moving (the Trainer keeps fully frozen submodules in eval mode).

    Uses ``model.freeze_encoder()`` when the model has it; otherwise sets ``requires_grad =
    False`` on the submodules named in :data:`ENCODER_PARTS` of the model or of ``model.unet``
    (the spectrogram U-Net wrapper). Returns the names of the frozen parameters. Raises
    LabkitError for a model with no such part.
    """
    if callable(getattr(model, "freeze_encoder", None)):
        model.freeze_encoder()
        return [n for n, p in model.named_parameters() if not p.requires_grad]
    frozen: list[str] = []
    for prefix, owner in (("", model), ("unet.", getattr(model, "unet", None))):
        if owner is None:
            continue
        for part in ENCODER_PARTS:
            module = getattr(owner, part, None)
            if module is None or not hasattr(module, "parameters"):
                continue
            for name, parameter in module.named_parameters():
                parameter.requires_grad_(False)
                frozen.append(f"{prefix}{part}.{name}")
    if not frozen:
        raise LabkitError(
            f"freeze_encoder: {type(model).__name__} has no encoder to freeze (looked for "
            f"{', '.join(ENCODER_PARTS)} on it and on .unet); give it an `encoder` submodule "
            "or a freeze_encoder() method")
    return frozen


def target_groups(model_sources: Sequence[str], targets: Sequence[str]) -> list[list[int]]:
    """For each target, the model sources whose sum estimates it.

    A target the model outputs maps to itself; ``"accompaniment"`` maps to the model's drums,
    bass and other when it has no accompaniment output. E.g. a four-stem model trained with
    vocals + accompaniment: ``[[0], [1, 2, 3]]``. Raises LabkitError when a target cannot be
    formed.
    """
    sources = list(model_sources)
    groups = []
    for target in targets:
        if target in sources:
            groups.append([sources.index(target)])
        elif target == "accompaniment" and all(s in sources for s in _ACCOMPANIMENT):
            groups.append([sources.index(s) for s in _ACCOMPANIMENT])
        else:
            raise LabkitError(f"the model separates {', '.join(sources)}; it has no output for "
                              f"the target {target!r}")
    return groups


def training_targets(model_sources: Sequence[str], song: Song) -> tuple[str, ...]:
    """The targets to fine-tune ``model_sources`` with, given the song's stems: the model's own
    sources when the stems provide them all, else vocals and accompaniment."""
    # any stem set gives the accompaniment (given, summed, or the mixture minus the vocals)
    available = set(song.stems) | ({"accompaniment"} if song.stems else set())
    if all(s in available for s in model_sources):
        return tuple(model_sources)
    return ("vocals", "accompaniment")


def _is_spec_separator(model: Any) -> bool:
    from labkit.models.spec_unet import SpecUNetSeparator

    return isinstance(model, SpecUNetSeparator)


def separation_loss(model: Any, mixture: Any, targets: Any, groups: Sequence[Sequence[int]],
                    target_names: Sequence[str]) -> Any:
    """The fine-tuning loss (a scalar tensor) for a batch ``mixture`` ``(batch, channels,
    samples)`` and ``targets`` ``(batch, targets, channels, samples)``.

    A spectrogram U-Net separator (:class:`labkit.models.spec_unet.SpecUNetSeparator`) is
    trained as in notebook 02: the L1 distance between the masked mixture magnitude and the
    vocals magnitude (its accompaniment is the rest by construction). Any other separator: the L1
    distance between waveforms, each target against the sum of its ``groups`` of model outputs.
    """
    import torch

    if _is_spec_separator(model):
        from labkit.models.spec_unet import masked_l1_loss

        vocals = targets[:, list(target_names).index("vocals")]
        spec = model.spectrogram(mixture).abs()
        target = model.spectrogram(vocals).abs()
        return masked_l1_loss(model.unet(spec), spec, target)
    estimates = model(mixture)
    grouped = torch.stack([estimates[:, g].sum(dim=1) for g in groups], dim=1)
    return (grouped - targets).abs().mean()


def _convert(audio: np.ndarray, sr: int, rate: int, channels: int) -> np.ndarray:
    """``(..., channels', samples)`` at ``sr`` -> ``(..., channels, samples')`` at ``rate``."""
    from labkit.audio import resample, to_channels

    return np.ascontiguousarray(resample(to_channels(audio, channels), sr, rate),
                                dtype=np.float32)


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the fine-tuned ``model`` (eval mode), the Trainer's
    ``history``, the ``split`` used (at the song's rate), the ``targets`` trained on, ``steps``,
    training ``seconds`` (wall clock), ``stopped_by`` ("budget", "epochs", ...), the
    ``workdir`` with its checkpoints and the names of ``frozen`` parameters."""

    model: Any
    history: dict[str, list]
    split: TimeSplit
    targets: tuple[str, ...]
    steps: int
    seconds: float
    stopped_by: str
    workdir: Path
    frozen: list[str] = field(default_factory=list)

    @property
    def trained(self) -> list[tuple[int, int]]:
        """The ranges of the song (samples at its rate) the model was trained on."""
        return [self.split.train]


def _budget_callback(seconds: float, clock: str) -> Callable[[Any, str, dict[str, Any]], None]:
    """A Trainer callback that stops the run after ``seconds`` of ``clock`` time: "wall" (the
    Trainer's training time) or "process" (this process's CPU time, all threads together; on a
    shared machine this is the compute actually received)."""
    from labkit.train import TimeBudget

    return TimeBudget(seconds, clock, per_thread=False, finish=False)


def finetune(model: Any, song: Song, split: TimeSplit | None = None, *,
             workdir: str | Path, train_fraction: float = 0.7, guard_seconds: float | None = None,
             epochs: int = 10, steps_per_epoch: int = 100, lr: float = 1e-4,
             batch_size: int = 4, segment_seconds: float | None = None,
             augmentation: Augmentation | None = None, freeze: bool = False,
             minutes: float | None = None, clock: str = "wall", resume: str | None = None,
             overwrite: bool = False, seed: int = 0, device: Any = None, progress: bool = True,
             threads: int | None = None, copy_model: bool = True) -> FinetuneResult:
    """Fine-tune ``model`` (a :class:`labkit.separate.Separator`) on the training part of
    ``song``.

    ``split``: default :func:`time_split` at ``train_fraction`` with a guard of
    ``guard_seconds`` (default: the model's :func:`receptive_field`). The training audio is
    converted to the model's rate and channels; examples of ``segment_seconds`` (default: the
    model's chunk, at most 3 s) are drawn by :class:`SongSegments` with ``augmentation``.
    Training: ``epochs`` x ``steps_per_epoch`` steps of ``batch_size`` at ``lr`` (Adam) with
    :func:`separation_loss`, stopped early after ``minutes`` of ``clock`` time (see
    :func:`_budget_callback`); ``freeze=True`` freezes the encoder first
    (:func:`freeze_encoder`). ``device``: default :func:`labkit.device` (``"cpu"`` forces the
    CPU); ``threads`` sets torch's CPU threads for the run. Checkpoints go to ``workdir``
    (``resume="auto"`` continues). The model is deep-copied first unless ``copy_model=False``.

    Raises LabkitError when the song has no stems: there is nothing to fine-tune on.
    """
    import copy

    import torch
    from torch.utils.data import DataLoader

    from labkit.train import Trainer

    if not song.stems:
        raise LabkitError(f"song {song.name!r} has no stems: there is nothing to fine-tune on. "
                          "Give the vocals (and optionally the accompaniment or all four "
                          "stems), or separate it with the shipped model as it is.")
    if clock not in ("wall", "process"):
        raise LabkitError(f"clock={clock!r}; use 'wall' or 'process'")
    if minutes is not None and not minutes > 0:
        raise LabkitError(f"minutes={minutes!r}; expected a positive number or None")
    if copy_model:
        model = copy.deepcopy(model)
    model = model.float()
    rate, channels = int(model.sample_rate), int(model.channels)
    if split is None:
        guard = (round(guard_seconds * song.sr) if guard_seconds is not None else
                 math.ceil(receptive_field(model) * song.sr / rate))
        split = time_split(song.samples, song.sr, train_fraction, guard)
    targets_names = training_targets(model.sources, song)
    groups = target_groups(model.sources, targets_names)
    train_audio = song.targets(targets_names)[..., :split.train_stop]
    train_audio = _convert(train_audio, song.sr, rate, channels)
    seconds = segment_seconds if segment_seconds is not None else min(
        getattr(model, "chunk_seconds", None) or 3.0, 3.0)
    length = round(seconds * rate)
    if hasattr(model, "valid_length"):
        length = int(model.valid_length(length))
    length = min(length, train_audio.shape[-1])
    frozen = freeze_encoder(model) if freeze else []
    data = DataLoader(SongSegments(train_audio, length, steps_per_epoch * batch_size,
                                   augmentation, seed), batch_size=batch_size, shuffle=False,
                      drop_last=True)
    names = tuple(targets_names)

    def step(net: Any, batch: Any, dev: Any) -> Any:
        mixture, target = batch
        return separation_loss(net, mixture, target, groups, names)

    callbacks = [_budget_callback(60.0 * minutes, clock)] if minutes is not None else []
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        trainer = Trainer(model, data, step_fn=step, workdir=workdir, epochs=epochs, lr=lr,
                          device=device, ckpt_every=100,
                          log_every=5, resume=resume, overwrite=overwrite, seed=seed,
                          progress=progress, tensorboard=False, callbacks=callbacks)
        history = trainer.fit()
    finally:
        torch.set_num_threads(previous_threads)
    if trainer.step >= epochs * steps_per_epoch:
        stopped_by = "epochs"
    elif minutes is not None:
        stopped_by = "budget"
    else:
        stopped_by = "stopped"
    return FinetuneResult(model=model.eval(), history=dict(history), split=split,
                          targets=names, steps=trainer.step, seconds=trainer.elapsed,
                          stopped_by=stopped_by, workdir=Path(workdir), frozen=frozen)


# =========================================================================== evaluation
def evaluate_holdout(model: Any, song: Song, split: TimeSplit, *,
                     region: tuple[int, int] | None = None,
                     trained: Sequence[tuple[int, int]] | None = None,
                     allow_overlap: bool = False, oracle: bool = False,
                     targets: Sequence[str] = ("vocals", "accompaniment")) -> dict[str, Any]:
    """Score ``model`` on the held-out part of ``song`` (or on ``region``), in museval SDR.

    Only the audio of the region is given to the model (cut out first), so nothing outside it
    reaches the estimate. ``trained``: the ranges the model was trained on (default:
    ``[split.train]``); a region within the guard band of them raises :class:`LeakageError`
    unless ``allow_overlap=True``. ``oracle=True`` also scores the IRM2 oracle (4096/1024 STFT)
    on the region. Returns ``{"sdr": {target: dB}, "oracle_sdr": {...} (if asked), "region":
    (start, stop), "seconds": float, "overlap": bool}``; SDR in the MUSDB convention (BSSEval v4,
    median over 1 s frames; :func:`labkit.metrics.sdr` with the exact "direct" backend).
    """
    from labkit.metrics import sdr
    from labkit.oracles import oracle_separation
    from labkit.separate import separate

    region = tuple(region) if region is not None else split.test
    trained = [split.train] if trained is None else list(trained)
    overlap = check_no_leakage(region, trained, split.guard, allow_overlap, song.sr)
    start, stop = region
    if not 0 <= start < stop <= song.samples:
        raise LabkitError(f"region {region} is outside the song (0, {song.samples})")
    reference = song.targets(targets)[..., start:stop]
    mixture = song.mixture[..., start:stop]
    estimates = separate(model, mixture, song.sr, overlap=0.25, batch_size=4, progress=False)
    grouped = np.stack([estimates[g].sum(axis=0)
                        for g in target_groups(model.sources, targets)])
    result: dict[str, Any] = {
        "sdr": {t: float(v) for t, v in zip(targets, sdr(reference, grouped, song.sr,
                                                         backend="direct"))},
        "region": (int(start), int(stop)), "seconds": (stop - start) / song.sr,
        "overlap": overlap,
    }
    if oracle:
        ideal = oracle_separation(reference, kind="irm2")
        result["oracle_sdr"] = {t: float(v) for t, v in zip(
            targets, sdr(reference, ideal, song.sr, backend="direct"))}
    return result


# =========================================================================== figures
def plot_split(song: Song, split: TimeSplit, ax: Any = None, title: str | None = None
               ) -> tuple[Any, Any]:
    """The song's mixture waveform with the training part, the guard band and the held-out part
    shaded (in the course style, :mod:`labkit.figures`). Returns ``(fig, ax)``."""
    from labkit import figures

    fig, ax = figures.waveform(song.mixture, song.sr, ax=ax, alpha=0.6,
                               title=title or f"{song.name}: {split.describe()}")
    with figures.style():
        for (start, stop), colour, label in (
                (split.train, figures.PALETTE[2], "trains"),
                ((split.train_stop, split.test_start), figures.PALETTE[7], "guard"),
                (split.test, figures.PALETTE[3], "held out")):
            ax.axvspan(start / song.sr, stop / song.sr, color=colour, alpha=0.15, lw=0,
                       label=label)
        ax.legend(loc="upper right", ncol=3)
    return fig, ax


def plot_scores(scores: Mapping[str, Mapping[str, float]], ax: Any = None,
                title: str = "vocals SDR on the held-out part", unit: str = "dB"
                ) -> tuple[Any, Any]:
    """Grouped bars: ``scores`` maps a song (or any group) to ``{method: value}``, e.g.
    ``{"song A": {"shipped": 3.1, "fine-tuned": 5.0, "IRM2 oracle": 9.8}}``; every group shows
    the methods in the order of the first group, values printed on the bars. Returns ``(fig,
    ax)``."""
    import matplotlib.pyplot as plt

    from labkit import figures

    groups = list(scores)
    if not groups:
        raise LabkitError("plot_scores: no scores given")
    methods = list(dict.fromkeys(m for g in groups for m in scores[g]))
    width = 0.8 / len(methods)
    with figures.style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4.0, 1.6 + 1.3 * len(groups) * len(methods) / 3),
                                            3.2), layout="constrained")
        else:
            fig = ax.figure
        for k, method in enumerate(methods):
            xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(groups))]
            values = [scores[g].get(method, math.nan) for g in groups]
            bars = ax.bar(xs, values, width * 0.92, label=method,
                          color=figures.PALETTE[k % len(figures.PALETTE)])
            ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=1)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(unit)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(title)
        ax.legend(loc="upper left", ncol=len(methods))
        ax.margins(y=0.2)
    return fig, ax


# =========================================================================== the whole song
@dataclass
class SongResult:
    """What :func:`finetune_song` returns.

    ``finetuned``: False when the song had no stems (then ``model`` is the shipped one and
    ``message`` says so). ``outputs``: stem -> written WAV path (when ``out_dir`` or a file
    input), or ``estimates`` ``(sources, channels, samples)`` for array inputs. ``scores``:
    ``{"before": ..., "after": ..., "oracle": ...}`` vocals/accompaniment SDR on the held-out
    part (empty without stems or with ``evaluate=False``). ``run``: the :class:`FinetuneResult`.
    """

    song: Song
    model: Any
    finetuned: bool
    message: str
    outputs: dict[str, Path] = field(default_factory=dict)
    estimates: np.ndarray | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    run: FinetuneResult | None = None
    split: TimeSplit | None = None


def _default_model_name(song: Song) -> str:
    from labkit.pretrained import default_model

    return default_model("stems" if song.stem_set == "four stems" else "vocals")


def _separate_song(model: Any, song: Song, out_dir: str | Path | None, progress: bool
                   ) -> tuple[dict[str, Path], np.ndarray | None]:
    """Separate the whole song: to files when it came from a file or ``out_dir`` is given."""
    from labkit.audio import save
    from labkit.separate import separate, separate_file

    if song.path is not None:
        return separate_file(song.path, model, out_dir=out_dir, progress=progress), None
    estimates = separate(model, song.mixture, song.sr, progress=progress)
    if out_dir is None:
        return {}, estimates
    folder = Path(out_dir) / f"{song.name}_separated"
    return {stem: save(folder / f"{song.name}_{stem}.wav", estimates[i], song.sr)
            for i, stem in enumerate(model.sources)}, estimates


def finetune_song(mixture: Any, stems: Mapping[str, Any] | None = None, *,
                  sr: int | None = None, model: Any = None, name: str | None = None,
                  out_dir: str | Path | None = None, checkpoints: str | Path = "checkpoints",
                  evaluate: bool = True, separate_song: bool = True, progress: bool = True,
                  tolerance_seconds: float = 0.1, **options: Any) -> SongResult:
    """Fine-tune on one song and separate all of it; see the module docstring.

    ``mixture``, ``stems``, ``sr``, ``name``, ``tolerance_seconds``: as in :func:`load_song`.
    ``model``: a shipped name, checkpoint path, run folder or module (default: the shipped
    vocals model, or the four-stem one when four stems are given). ``options`` go to
    :func:`finetune` (``epochs``, ``steps_per_epoch``, ``lr``, ``freeze``, ``minutes``, ...).
    Checkpoints go to ``<checkpoints>/single_audio_<id>/`` (:func:`song_id`). With
    ``evaluate``, the model before and after fine-tuning and the IRM2 oracle are scored on the
    held-out part. With ``separate_song``, the fine-tuned model separates the whole song into
    ``<out>/<name>_separated/<name>_<stem>.wav`` (``<out>``: ``out_dir``, default the folder of
    the mixture file; array inputs without ``out_dir`` come back as ``estimates``).

    Without stems: warns (:class:`NothingToFineTuneWarning`) that there is nothing to fine-tune
    on and separates with the shipped model.
    """
    import torch

    from labkit.pretrained import resolve_model

    song = load_song(mixture, stems, sr=sr, name=name, tolerance_seconds=tolerance_seconds)
    if isinstance(model, torch.nn.Module):
        base = model
    else:
        base = resolve_model(model if model is not None else _default_model_name(song))
    label = getattr(base, "pretrained", {}).get("name", type(base).__name__)
    if not song.stems:
        message = (f"{song.name}: no stems given, so there is nothing to fine-tune on; "
                   f"separating it with the shipped model {label!r} as it is. Give --vocals "
                   "(and --accompaniment, or --drums/--bass/--other) to fine-tune.")
        warnings.warn(message, NothingToFineTuneWarning, stacklevel=2)
        outputs, estimates = (_separate_song(base, song, out_dir, progress) if separate_song
                              else ({}, None))
        return SongResult(song=song, model=base, finetuned=False, message=message,
                          outputs=outputs, estimates=estimates)
    workdir = Path(checkpoints) / f"single_audio_{song_id(song.mixture, song.sr)}"
    run = finetune(base, song, workdir=workdir, progress=progress, **options)
    scores: dict[str, dict[str, float]] = {}
    if evaluate:
        before = evaluate_holdout(base, song, run.split, trained=[], oracle=True)
        after = evaluate_holdout(run.model, song, run.split, trained=run.trained)
        scores = {"before": before["sdr"], "after": after["sdr"], "oracle": before["oracle_sdr"]}
    outputs, estimates = (_separate_song(run.model, song, out_dir, progress) if separate_song
                          else ({}, None))
    message = (f"{song.name}: fine-tuned {label!r} for {run.steps} steps ({run.seconds:.0f} s) on "
               f"{run.split.describe()}")
    return SongResult(song=song, model=run.model, finetuned=True, message=message,
                      outputs=outputs, estimates=estimates, scores=scores, run=run,
                      split=run.split)


# =========================================================================== command line
def _shipped_names() -> str:
    """The shipped model names for help texts ("none found" when there are none)."""
    from labkit.pretrained import available

    try:
        return ", ".join(available()) or "none found"
    except LabkitError:
        return "none found"


def add_cli_arguments(p: Any) -> Any:
    """Add the options of ``labkit finetune`` to the argparse parser ``p``; returns it."""
    p.add_argument("song", type=Path, help="the mixture (WAV, FLAC, OGG, MP3, ...)")
    stems = p.add_argument_group("stems (all optional; without them the shipped model separates "
                                 "the song as it is)")
    stems.add_argument("--vocals", type=Path, help="the vocals stem")
    stems.add_argument("--accompaniment", type=Path,
                       help="everything but the vocals (default: the mixture minus the vocals)")
    for name in _ACCOMPANIMENT:
        stems.add_argument(f"--{name}", type=Path,
                           help=f"the {name} stem (with --vocals and the two others)")
    p.add_argument("--model", default=None, metavar="NAME|CKPT",
                   help=f"model to start from: a shipped name ({_shipped_names()}), a "
                        "checkpoint file or a run folder (default: the shipped vocals model, or "
                        "the four-stem one with four stems)")
    p.add_argument("--out", type=Path, default=None,
                   help="write <out>/<name>_separated/<name>_<stem>.wav (default: beside SONG)")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"),
                   help="run folders go to CHECKPOINTS/single_audio_<id>/ (default checkpoints)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--minutes", type=float, default=None,
                   help="stop training after this many minutes (wall clock)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train only the decoder (the encoder keeps the shipped weights)")
    p.add_argument("--train-fraction", type=float, default=0.7,
                   help="the first part of the song that trains; the rest is held out to score "
                        "the result (default 0.7)")
    p.add_argument("--no-augment", action="store_true",
                   help="train on plain excerpts (no remixing, gains or channel swaps)")
    p.add_argument("--tolerance", type=float, default=0.1, metavar="SECONDS",
                   help="largest length difference between a stem and the mixture that is "
                        "trimmed or padded instead of refused (default 0.1 s)")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue an earlier run of this song")
    run.add_argument("--overwrite", action="store_true",
                     help="delete an earlier run of this song and start again")
    p.add_argument("--no-evaluate", action="store_true",
                   help="skip the scores on the held-out part")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _cli_stems(args: Any) -> dict[str, Path]:
    """The stems named on the command line, checked to be one of the accepted sets."""
    given = {k: getattr(args, k) for k in ("vocals", "accompaniment", *_ACCOMPANIMENT)
             if getattr(args, k) is not None}
    parts = [k for k in _ACCOMPANIMENT if k in given]
    if given and "vocals" not in given:
        raise StemAlignmentError("give --vocals: fine-tuning learns the vocals (with "
                                 "--accompaniment or --drums/--bass/--other optionally)")
    if "accompaniment" in given and parts:
        raise StemAlignmentError("give either --accompaniment or --drums, --bass and --other, "
                                 "not both")
    if parts and len(parts) != len(_ACCOMPANIMENT):
        missing = ", ".join(f"--{k}" for k in _ACCOMPANIMENT if k not in given)
        raise StemAlignmentError(f"four-stem fine-tuning needs --drums, --bass and --other; "
                                 f"missing {missing}")
    return given


def cli_main(args: Any) -> int:
    """Run ``labkit finetune`` with parsed ``args`` (see :func:`add_cli_arguments`)."""
    stems = _cli_stems(args)
    options: dict[str, Any] = {}
    if stems:
        options = {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
                   "lr": args.lr, "batch_size": args.batch_size, "minutes": args.minutes,
                   "freeze": args.freeze_encoder, "train_fraction": args.train_fraction,
                   "augmentation": Augmentation.none() if args.no_augment else None,
                   "resume": "auto" if args.resume else None, "overwrite": args.overwrite,
                   "seed": args.seed, "threads": args.threads}
    from labkit.errors import CheckpointError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NothingToFineTuneWarning)  # printed below instead
        try:
            result = finetune_song(args.song, stems, model=args.model, out_dir=args.out,
                                   checkpoints=args.checkpoints, evaluate=not args.no_evaluate,
                                   progress=not args.no_progress,
                                   tolerance_seconds=args.tolerance, **options)
        except CheckpointError as exc:
            if "already holds a training run" not in str(exc):
                raise
            raise CheckpointError(f"{exc} On the command line: --resume continues that run, "
                                  "--overwrite starts again.") from exc
    for note in result.song.notes:
        print(f"note: {note}")
    print(result.message)
    if result.scores:
        print("vocals SDR on the held-out part (museval convention, dB): "
              + ", ".join(f"{k} {v['vocals']:.2f}" for k, v in (
                  ("shipped model", result.scores["before"]),
                  ("fine-tuned", result.scores["after"]),
                  ("IRM2 oracle", result.scores["oracle"]))))
    if result.run is not None:
        print(f"checkpoints: {result.run.workdir}")
    for stem, path in result.outputs.items():
        print(f"wrote {stem}: {path}")
    return 0
