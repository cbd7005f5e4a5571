"""Torch data sets over :class:`~labkit.data.tracks.Track` lists: training, validation, evaluation.

- :class:`SegmentDataset`: random training segments with the standard MUSDB augmentations
  (random offsets, stems remixed across tracks, random gain, channel swap).
- :class:`FixedSegments`: the same item format, deterministic and without augmentation (validation).
- :class:`FullTracks`: whole tracks for evaluation.

Items are ``(mixture, targets)`` float32 tensors, ``(channels, samples)`` and
``(n_targets, channels, samples)``, and the mixture is always the sum of the four stems the item
was built from, so that ``targets.sum(0) == mixture`` whenever the targets cover each stem once
(e.g. the four stems, or ``("vocals", "accompaniment")``).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from labkit.audio import pad_or_crop, rms_db
from labkit.data.tracks import (
    STEMS,
    Track,
    _convert,
    check_targets,
    combine_stems,
    target_stems,
)
from labkit.errors import DataError

MAX_DRAWS = 10
"""How often SegmentDataset redraws a segment found silent before keeping the last draw."""


def read_segment(track: Track, stems: Sequence[str], start_frame: int, num_frames: int,
                 sample_rate: int, channels: int) -> np.ndarray:
    """Read ``num_frames`` samples at ``sample_rate`` from ``start_frame`` (in the file's rate).

    Reads only the frames needed at the file's rate, then resamples and remixes to ``channels``;
    zero-pads past the end of the track. Returns float32 ``(len(stems), channels, num_frames)``.
    """
    if sample_rate == track.sample_rate:
        frames_in = num_frames
    else:
        frames_in = math.ceil(num_frames * track.sample_rate / sample_rate)
    audio = track.load_frames(list(stems), start_frame, frames_in)
    return _convert(audio, track.sample_rate, sample_rate, channels, num_frames)


def mix_targets(stems: dict[str, np.ndarray], targets: Sequence[str]) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Build ``(mixture (channels, samples), targets (n_targets, channels, samples))`` from stems.

    ``stems`` maps each of the four stem names to ``(channels, samples)``. When the targets cover
    every stem exactly once the mixture is computed as the sum of the targets, so the two agree
    to the last bit; otherwise it is the sum of the four stems.
    """
    target_audio = combine_stems(stems, targets)
    covered = Counter(s for t in targets for s in target_stems(t))
    if covered == Counter(STEMS):
        mixture = target_audio[0].copy()
        for part in target_audio[1:]:
            mixture += part
    else:
        mixture = combine_stems(stems, ["mixture"])[0]
    return mixture, target_audio


class _TrackDataset(Dataset):
    """Shared checks: a non-empty track list, valid targets, one output rate and channel count."""

    def __init__(self, tracks: Sequence[Track] | Track, targets: Sequence[str] | str,
                 mono: bool, sample_rate: int | None) -> None:
        self.tracks = [tracks] if isinstance(tracks, Track) else list(tracks)
        if not self.tracks:
            raise DataError("No tracks given: pass the list find_tracks(...) returns")
        self.targets = check_targets(targets)
        rates = sorted({t.sample_rate for t in self.tracks})
        if sample_rate is None and len(rates) > 1:
            raise DataError(f"The tracks have different sample rates {rates}: pass sample_rate= "
                            "to resample them all to one")
        self.sample_rate = int(sample_rate or rates[0])
        if self.sample_rate <= 0:
            raise DataError(f"sample_rate={sample_rate} must be a positive number of Hz")
        self.mono = bool(mono)
        self.channels = 1 if self.mono else max(t.num_channels for t in self.tracks)

    def _frames(self, seconds: float, name: str) -> int:
        frames = round(seconds * self.sample_rate)
        if frames <= 0:
            raise DataError(f"{name}={seconds} s is shorter than one sample at "
                            f"{self.sample_rate} Hz")
        return frames


class SegmentDataset(_TrackDataset):
    """Random training segments with the standard MUSDB augmentations.

    Item ``i`` of epoch ``e`` is drawn from ``np.random.default_rng([seed, e, i])`` alone, so two
    instances, DataLoader workers and resumed runs give the same items; :meth:`set_epoch` moves to
    new segments (call it before iterating each epoch; with ``persistent_workers=True`` the
    workers keep the epoch they were started with).

    Per item: with ``random_mix`` each of the four stems comes from its own randomly chosen track
    at its own random offset (stems remixed across tracks); without it one track and one offset
    give a real excerpt of a song. Then each stem gets a gain drawn uniformly from ``gain``
    (``None``: no gain) and, when ``channel_swap``, its left/right channels swapped with
    probability 1/2. ``mono`` averages the channels; ``sample_rate`` resamples (default: the
    tracks' rate). With ``silent_threshold_db`` a stem (or, without ``random_mix``, an excerpt with
    any stem) quieter than that RMS level is redrawn, up to 10 draws. Tracks shorter than a
    segment are zero-padded at the end.

    Items: ``(mixture (channels, samples), targets (n_targets, channels, samples))`` float32
    tensors with ``samples = round(segment_seconds * sample_rate)``; the mixture is the sum of the
    four augmented stems. Only the frames needed are read from disk.
    """

    def __init__(self, tracks: Sequence[Track] | Track, segment_seconds: float = 6.0,
                 targets: Sequence[str] | str = STEMS, samples_per_epoch: int = 1000,
                 random_mix: bool = True, gain: tuple[float, float] | None = (0.25, 1.25),
                 channel_swap: bool = True, mono: bool = False, sample_rate: int | None = None,
                 seed: int = 0, silent_threshold_db: float | None = None) -> None:
        super().__init__(tracks, targets, mono, sample_rate)
        self.segment_seconds = float(segment_seconds)
        self.segment_frames = self._frames(segment_seconds, "segment_seconds")
        if samples_per_epoch <= 0:
            raise DataError(f"samples_per_epoch={samples_per_epoch} must be positive")
        self.samples_per_epoch = int(samples_per_epoch)
        if gain is not None:
            low, high = gain
            if not 0 <= low <= high:
                raise DataError(f"gain={gain} must be (low, high) with 0 <= low <= high")
        self.gain = gain
        self.random_mix = bool(random_mix)
        self.channel_swap = bool(channel_swap)
        self.seed = int(seed)
        self.silent_threshold_db = silent_threshold_db
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the segments of epoch ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _draw(self, rng: np.random.Generator, stems: Sequence[str]) -> np.ndarray:
        """A random track and offset for ``stems``: ``(len(stems), channels, segment_frames)``."""
        for _ in range(MAX_DRAWS):
            track = self.tracks[int(rng.integers(len(self.tracks)))]
            frames_in = math.ceil(self.segment_frames * track.sample_rate / self.sample_rate)
            start = int(rng.integers(max(track.num_frames - frames_in, 0) + 1))
            audio = read_segment(track, stems, start, self.segment_frames, self.sample_rate,
                                 self.channels)
            if self.silent_threshold_db is None or all(
                    rms_db(a) >= self.silent_threshold_db for a in audio):
                break
        return audio

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside [0, {len(self)})")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.random_mix:
            stems = {stem: self._draw(rng, [stem])[0] for stem in STEMS}
        else:
            stems = dict(zip(STEMS, self._draw(rng, STEMS)))
        for stem in STEMS:
            # Drawn even when switched off so that the segments do not depend on the switches.
            gain = rng.uniform(*self.gain) if self.gain is not None else 1.0
            swap = rng.random() < 0.5
            audio = stems[stem] * np.float32(gain)
            if self.channel_swap and swap and audio.shape[0] == 2:
                audio = audio[::-1]
            stems[stem] = np.ascontiguousarray(audio, dtype=np.float32)
        mixture, targets = mix_targets(stems, self.targets)
        return torch.from_numpy(mixture), torch.from_numpy(targets)


class FixedSegments(_TrackDataset):
    """Deterministic validation segments, no augmentation.

    Each track is cut into segments of ``segment_seconds`` starting every ``hop_seconds``
    (default: the segment length, i.e. back to back); the tail shorter than a segment is dropped,
    and a track shorter than one segment gives one zero-padded segment. ``max_per_track`` keeps
    that many segments spread evenly over each track. ``segments`` lists ``(track index, start
    frame at the track's rate)``. Items as in :class:`SegmentDataset`: ``(mixture (channels,
    samples), targets (n_targets, channels, samples))`` with the mixture the sum of the stems.
    """

    def __init__(self, tracks: Sequence[Track] | Track, segment_seconds: float = 6.0,
                 targets: Sequence[str] | str = STEMS, hop_seconds: float | None = None,
                 max_per_track: int | None = None, mono: bool = False,
                 sample_rate: int | None = None) -> None:
        super().__init__(tracks, targets, mono, sample_rate)
        self.segment_seconds = float(segment_seconds)
        self.segment_frames = self._frames(segment_seconds, "segment_seconds")
        hop_seconds = self.segment_seconds if hop_seconds is None else float(hop_seconds)
        self._frames(hop_seconds, "hop_seconds")
        if max_per_track is not None and max_per_track <= 0:
            raise DataError(f"max_per_track={max_per_track} must be positive or None")
        self.segments: list[tuple[int, int]] = []
        for index, track in enumerate(self.tracks):
            length = round(self.segment_seconds * track.sample_rate)
            hop = max(round(hop_seconds * track.sample_rate), 1)
            starts = list(range(0, track.num_frames - length + 1, hop)) or [0]
            if max_per_track is not None and len(starts) > max_per_track:
                keep = np.unique(np.linspace(0, len(starts) - 1, max_per_track).round())
                starts = [starts[int(k)] for k in keep]
            self.segments.extend((index, start) for start in starts)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside [0, {len(self)})")
        track_index, start = self.segments[index]
        audio = read_segment(self.tracks[track_index], STEMS, start, self.segment_frames,
                             self.sample_rate, self.channels)
        mixture, targets = mix_targets(dict(zip(STEMS, audio)), self.targets)
        return torch.from_numpy(mixture), torch.from_numpy(targets)


class FullTracks(_TrackDataset):
    """Whole tracks for evaluation: item ``i`` is ``(name, mixture, targets)``.

    ``mixture`` is ``(channels, samples)``, ``targets`` ``(n_targets, channels, samples)``, float32
    tensors at ``sample_rate`` (default: the tracks' rate). ``mixture="sum"`` makes the mixture the
    sum of the four stems (the data set contract); ``"file"`` uses the stored mixture (what
    MUSDB18 evaluation separates; it can differ slightly from the sum).
    """

    def __init__(self, tracks: Sequence[Track] | Track, targets: Sequence[str] | str = STEMS,
                 mono: bool = False, sample_rate: int | None = None,
                 mixture: str = "sum") -> None:
        super().__init__(tracks, targets, mono, sample_rate)
        if mixture not in ("sum", "file"):
            raise DataError(f"mixture={mixture!r}: use 'sum' or 'file'")
        self.mixture = mixture

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside [0, {len(self)})")
        track = self.tracks[index]
        length = round(track.num_frames * self.sample_rate / track.sample_rate)
        audio = read_segment(track, STEMS, 0, length, self.sample_rate, self.channels)
        mixture, targets = mix_targets(dict(zip(STEMS, audio)), self.targets)
        if self.mixture == "file":
            mixture = track.load_mixture(sample_rate=self.sample_rate, channels=self.channels)
            mixture = np.ascontiguousarray(pad_or_crop(mixture, length))
        return track.name, torch.from_numpy(mixture), torch.from_numpy(targets)

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

