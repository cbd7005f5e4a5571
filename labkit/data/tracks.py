"""Multitrack songs on disk: find them (built-in set, MUSDB18, MUSDB18-HQ) and read stems.

Two layouts are understood, the same two the ``musdb`` package reads:

- **WAV folders** (MUSDB18-HQ and the built-in toy-MUSDB):
  ``root/{train,test}/<track>/{vocals,drums,bass,other}.wav`` (``mixture.wav`` optional). Read with
  soundfile, which reads only the frames asked for (random chunks ~130x faster than through musdb).
- **Stem files** (MUSDB18): ``root/{train,test}/<track>.stem.mp4``. Read through ``musdb``
  (imported lazily: it needs the ``ffmpeg`` binaries), which decodes with ffmpeg: much slower.

A :class:`Track` is a small picklable record (name, split, rate, channels, length, where it lives)
that loads audio on demand, so data sets can hold hundreds of them and DataLoader workers can
receive copies.
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from labkit.audio import pad_or_crop, resample, to_channels
from labkit.errors import DataError

STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
"""The four sources of MUSDB18, in the order used everywhere in labkit."""

ACCOMPANIMENT: tuple[str, ...] = ("drums", "bass", "other")
"""The stems summed into the ``"accompaniment"`` target."""

SPLITS: tuple[str, ...] = ("train", "valid", "test", "train+valid")
"""Accepted ``split`` names: ``train+valid`` is the whole train folder."""

VALID_EVERY = 5
"""Without a list of validation tracks, every 5th train track (by name) is held out for 'valid'."""

MUSDB_URL = "https://sigsep.github.io/datasets/musdb.html"

# Stream order inside a MUSDB18 .stem.mp4 file (musdb's configs/mus.yaml).
_STEM_IDS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}

_LAYOUT_HELP = (
    "Expected the MUSDB18-HQ layout root/{train,test}/<track>/{vocals,drums,bass,other}.wav "
    "(mixture.wav optional) or the MUSDB18 layout root/{train,test}/<track>.stem.mp4. "
    f"Real MUSDB18 / MUSDB18-HQ come from {MUSDB_URL} (Zenodo, on request); "
    "root=None uses the built-in toy-MUSDB set instead."
)


def target_stems(target: str) -> tuple[str, ...]:
    """The stems whose sum is ``target``: a stem name, ``"accompaniment"`` or ``"mixture"``."""
    if target in STEMS:
        return (target,)
    if target == "accompaniment":
        return ACCOMPANIMENT
    if target == "mixture":
        return STEMS
    raise DataError(
        f"Unknown target {target!r}: use one of {', '.join(STEMS)}, accompaniment, mixture"
    )


def check_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise ``targets`` (one name or a sequence of names) to a checked tuple."""
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if not targets:
        raise DataError("targets is empty: ask for at least one of "
                        f"{', '.join(STEMS)}, accompaniment, mixture")
    for target in targets:
        target_stems(target)
    return targets


def combine_stems(stems: dict[str, np.ndarray], targets: Sequence[str]) -> np.ndarray:
    """Stack ``targets`` built from ``stems`` (name -> (channels, samples)).

    Returns float32 ``(len(targets), channels, samples)``; ``accompaniment`` and ``mixture`` are
    sums of the stems they contain.
    """
    out = []
    for target in targets:
        parts = [stems[name] for name in target_stems(target)]
        total = parts[0].astype(np.float32, copy=True)
        for part in parts[1:]:
            total += part
        out.append(total)
    return np.stack(out).astype(np.float32, copy=False)


def _convert(audio: np.ndarray, sr_in: int, sr_out: int | None, channels: int | None,
             length: int | None) -> np.ndarray:
    """Resample (stems, channels, samples) to ``sr_out``, remix to ``channels``, fix the length."""
    if channels is not None:
        audio = to_channels(audio, channels)
    if sr_out is not None and sr_out != sr_in:
        if length is None:
            length = round(audio.shape[-1] * sr_out / sr_in)
        audio = resample(audio, sr_in, sr_out)
    if length is not None and audio.shape[-1] != length:
        audio = pad_or_crop(audio, length)
    return np.ascontiguousarray(audio, dtype=np.float32)


@dataclass
class Track:
    """One multitrack song: where it lives and its format; audio is read on demand.

    ``path`` is the track folder (``kind="wav"``, one WAV per stem) or the ``.stem.mp4`` file
    (``kind="stem"``). All stems of a track share ``sample_rate``, ``num_channels`` and
    ``num_frames`` (checked when the track is found).
    """

    name: str
    split: str
    sample_rate: int
    num_channels: int
    num_frames: int
    path: Path
    kind: str = "wav"
    has_mixture: bool = True
    _info: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate

    def stem_path(self, stem: str) -> Path:
        """The WAV file of ``stem`` (``kind="wav"`` only)."""
        return Path(self.path) / f"{stem}.wav"

    def load_frames(self, stems: Sequence[str], start_frame: int = 0,
                    num_frames: int | None = None) -> np.ndarray:
        """Read stems as stored (file rate and channels), frames ``[start_frame, +num_frames)``.

        ``stems`` are stem names or ``"mixture"`` (the stored mixture). Frames past the end of the
        track are zeros, so the result always has ``num_frames`` samples
        (default: to the end of the track). Returns float32 ``(len(stems), channels, samples)``.
        """
        if start_frame < 0 or start_frame > self.num_frames:
            raise DataError(f"Track {self.name!r}: start frame {start_frame} is outside "
                            f"[0, {self.num_frames}]")
        if num_frames is None:
            num_frames = self.num_frames - start_frame
        if num_frames < 0:
            raise DataError(f"Track {self.name!r}: num_frames={num_frames} must be >= 0")
        available = min(num_frames, self.num_frames - start_frame)
        reader = self._read_wav if self.kind == "wav" else self._read_stem_file
        out = np.zeros((len(stems), self.num_channels, num_frames), dtype=np.float32)
        for i, stem in enumerate(stems):
            if available > 0:
                audio = reader(stem, start_frame, available)
                out[i, :, : audio.shape[-1]] = audio[:, :available]
        return out

    def _read_wav(self, stem: str, start_frame: int, frames: int) -> np.ndarray:
        path = self.stem_path(stem)
        try:
            data, _ = sf.read(path, start=start_frame, frames=frames, dtype="float32",
                              always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise DataError(f"Cannot read {path}: {err}") from err
        return data.T

    def _read_stem_file(self, stem: str, start_frame: int, frames: int) -> np.ndarray:
        import musdb.audio_classes  # noqa: F401  (fails clearly without ffmpeg on PATH)
        import stempeg

        if self._info is None:
            self._info = stempeg.Info(str(self.path))
        # ffmpeg seeks in seconds; the frame count is fixed again by the caller's zero-padding.
        audio, _ = stempeg.read_stems(
            str(self.path), stem_id=_STEM_IDS[stem], start=start_frame / self.sample_rate,
            duration=frames / self.sample_rate, info=self._info, dtype=np.float32,
            ffmpeg_format="s16le",
        )
        return pad_or_crop(np.asarray(audio, dtype=np.float32).T, frames)

    def load(self, targets: str | Sequence[str] = STEMS, start: float = 0.0,
             duration: float | None = None, sample_rate: int | None = None,
             channels: int | None = None) -> np.ndarray:
        """Read ``targets`` from ``start`` seconds for ``duration`` seconds (None: to the end).

        ``targets``: stem names, ``"accompaniment"`` (drums + bass + other) or ``"mixture"`` (the
        stored mixture when the track has one, else the sum of the four stems). Only the frames
        needed are read. With ``duration`` the result has exactly ``round(duration * rate)``
        samples, zero-padded past the end of the track. ``sample_rate`` resamples,
        ``channels`` (1 or 2) downmixes/upmixes. Returns float32 ``(len(targets), channels,
        samples)``.
        """
        targets = check_targets(targets)
        if start < 0 or start > self.duration:
            raise DataError(f"Track {self.name!r}: start={start} s is outside the track "
                            f"(0 to {self.duration:.3f} s)")
        if duration is not None and duration <= 0:
            raise DataError(f"Track {self.name!r}: duration={duration} s must be positive "
                            "(or None for the rest of the track)")
        start_frame = round(start * self.sample_rate)
        frames = None if duration is None else max(round(duration * self.sample_rate), 1)
        stored_mixture = "mixture" in targets and self.has_mixture
        needed = {s for t in targets if not (t == "mixture" and self.has_mixture)
                  for s in target_stems(t)}
        read = [s for s in STEMS if s in needed] + (["mixture"] if stored_mixture else [])
        audio = self.load_frames(read, start_frame, frames)
        stems = dict(zip(read, audio))
        parts = []
        for target in targets:
            if target == "mixture" and stored_mixture:
                parts.append(stems["mixture"][None])
            else:
                parts.append(combine_stems(stems, [target]))
        out = np.concatenate(parts)
        length = None
        if sample_rate is not None and duration is not None:
            length = round(duration * sample_rate)
        return _convert(out, self.sample_rate, sample_rate, channels, length)

    def load_mixture(self, start: float = 0.0, duration: float | None = None,
                     sample_rate: int | None = None, channels: int | None = None) -> np.ndarray:
        """The mixture (stored, or the sum of the stems if there is none): ``(channels, samples)``.

        Arguments as in :meth:`load`.
        """
        return self.load(("mixture",), start, duration, sample_rate, channels)[0]


# --------------------------------------------------------------------------------------------
# Finding tracks
# --------------------------------------------------------------------------------------------

def musdb_validation_tracks() -> list[str]:
    """musdb's official validation track names (a subset of MUSDB18's train folder).

    Read from musdb's own ``configs/mus.yaml`` without importing musdb (which needs ffmpeg).
    """
    import yaml

    spec = importlib.util.find_spec("musdb")
    if spec is None or not spec.submodule_search_locations:
        return []
    setup = Path(spec.submodule_search_locations[0]) / "configs" / "mus.yaml"
    with open(setup, encoding="utf-8") as f:
        return list(yaml.safe_load(f).get("validation_tracks", []))


def _wav_track(folder: Path, split: str) -> Track:
    """A :class:`Track` for a MUSDB18-HQ track folder, after checking its stems agree."""
    infos = {}
    for stem in (*STEMS, "mixture"):
        path = folder / f"{stem}.wav"
        if not path.is_file():
            continue
        try:
            infos[stem] = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as err:
            raise DataError(f"Cannot read {path}: {err}") from err
    missing = [f"{s}.wav" for s in STEMS if s not in infos]
    if missing:
        raise DataError(f"Track folder {folder} lacks {', '.join(missing)}. {_LAYOUT_HELP}")
    shapes = {(i.samplerate, i.frames, i.channels) for i in infos.values()}
    if len(shapes) > 1:
        detail = "; ".join(f"{s}.wav: {i.samplerate} Hz, {i.frames} frames, {i.channels} ch"
                           for s, i in infos.items())
        raise DataError(f"Track folder {folder}: stems differ ({detail}). Every stem of a track "
                        "must have the same sample rate, length and number of channels.")
    info = infos["vocals"]
    return Track(name=folder.name, split=split, sample_rate=int(info.samplerate),
                 num_channels=int(info.channels), num_frames=int(info.frames), path=folder,
                 kind="wav", has_mixture="mixture" in infos)


def _stem_track(path: Path, split: str) -> Track:
    """A :class:`Track` for a MUSDB18 ``.stem.mp4`` file (needs musdb and ffmpeg)."""
    try:
        import musdb.audio_classes  # noqa: F401
        import stempeg
    except Exception as err:  # musdb raises a bare RuntimeError when ffmpeg is missing
        raise DataError(f"Reading {path} needs the musdb package and the ffmpeg/ffprobe "
                        f"binaries on PATH ({err}). MUSDB18-HQ (WAV) needs neither.") from err
    info = stempeg.Info(str(path))
    if info.nb_audio_streams < 5:
        raise DataError(f"{path} has {info.nb_audio_streams} audio streams; a MUSDB18 stem file "
                        "has 5 (mixture, drums, bass, other, vocals)")
    return Track(name=path.name[: -len(".stem.mp4")], split=split,
                 sample_rate=int(info.rate(0)), num_channels=int(info.channels(0)),
                 num_frames=int(info.samples(0)), path=path, kind="stem", has_mixture=True,
                 _info=info)


def _layout(root: Path) -> str:
    """``"wav"`` or ``"stem"``: which layout ``root`` holds (WAV wins when both are there)."""
    has_stem = False
    for sub in ("train", "test"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_dir() and (entry / "vocals.wav").is_file():
                return "wav"
            if entry.name.endswith(".stem.mp4"):
                has_stem = True
    if has_stem:
        return "stem"
    seen = sorted(p.name for p in root.iterdir())[:8]
    hint = ""
    if (root / "vocals.wav").is_file() or any((root / n / "vocals.wav").is_file() for n in seen):
        hint = " It looks like a track or split folder: pass the folder above train/ and test/."
    raise DataError(f"{root} holds neither data set layout (found: {', '.join(seen) or 'nothing'})."
                    f"{hint} {_LAYOUT_HELP}")


def _valid_names(root: Path, train_names: list[str], valid_tracks: Sequence[str] | None) -> set:
    """Names of the train-folder tracks held out as the validation split (see find_tracks)."""
    if valid_tracks is not None:
        return set(valid_tracks)
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8")).get("valid")
        except (json.JSONDecodeError, AttributeError) as err:
            raise DataError(f"{manifest} is not a JSON object: {err}") from err
        if listed is not None:
            return set(listed)
    official = set(musdb_validation_tracks())
    if official & set(train_names):
        return official
    names = sorted(train_names)
    chosen = names[VALID_EVERY - 1::VALID_EVERY]
    if not chosen and len(names) >= 2:
        chosen = names[-1:]
    return set(chosen)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data set folder ``root`` names.

    ``None`` or ``"toy"``: the built-in toy-MUSDB set (generated on first use);
    ``"musdb"``: the folder in the ``MUSDB_PATH`` environment variable; anything else: a path.
    """
    if root is None or str(root) == "toy":
        from labkit.data import toy

        return Path(toy.ensure())
    if str(root) == "musdb":
        env = os.environ.get("MUSDB_PATH")
        if not env:
            raise DataError("root='musdb' reads the MUSDB_PATH environment variable, which is not "
                            "set: set it to your MUSDB18 or MUSDB18-HQ folder (the one holding "
                            f"train/ and test/), or pass that folder as root. {_LAYOUT_HELP}")
        root = env
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"Data set folder {path} does not exist. {_LAYOUT_HELP}")
    return path


def find_tracks(root: str | os.PathLike | None = None, split: str = "train",
                subset: int | Sequence[str] | None = None,
                valid_tracks: Sequence[str] | None = None) -> list[Track]:
    """The tracks of one split of a data set, sorted by name.

    ``root``: ``None`` (built-in toy-MUSDB), ``"musdb"`` (the ``MUSDB_PATH`` folder), or a folder in
    the MUSDB18-HQ WAV layout or the MUSDB18 ``.stem.mp4`` layout (see :func:`resolve_root`).

    ``split``: ``"test"`` (the test folder), ``"train"`` and ``"valid"`` (the train folder minus /
    only the validation tracks) or ``"train+valid"`` (the whole train folder). The validation
    tracks are, in this order of precedence: ``valid_tracks`` if given; the ``"valid"`` list of
    ``root/manifest.json`` if there is one; musdb's official list when the folder is real MUSDB18;
    otherwise every 5th train track sorted by name (the last track if that picks none and there are
    at least two).

    ``subset``: an int keeps the first n tracks (quick runs); a list of names keeps those tracks.
    Raises DataError for a missing folder, a folder with neither layout, an empty split, or a track
    whose stems differ in rate, length or channels.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}")
    path = resolve_root(root)
    layout = _layout(path)
    folder = path / ("test" if split == "test" else "train")
    if not folder.is_dir():
        raise DataError(f"Split {split!r} is empty: {folder} does not exist. {_LAYOUT_HELP}")
    if layout == "wav":
        # Hidden folders (.ipynb_checkpoints, .DS_Store debris) are not tracks.
        entries = {p.name: p for p in folder.iterdir()
                   if p.is_dir() and not p.name.startswith(".")}
    else:
        entries = {p.name[: -len(".stem.mp4")]: p for p in folder.iterdir()
                   if p.name.endswith(".stem.mp4")}
    names = sorted(entries)
    if split != "test" and split != "train+valid":
        valid = _valid_names(path, names, valid_tracks)
        names = [n for n in names if (n in valid) == (split == "valid")]
    if isinstance(subset, int):
        names = names[:subset]
    elif subset is not None:
        wanted = list(subset)
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise DataError(f"Split {split!r} of {path} has no track named "
                            f"{', '.join(map(repr, unknown))}; it has {len(names)} tracks, e.g. "
                            f"{', '.join(map(repr, names[:3]))}")
        names = wanted
    if not names:
        raise DataError(f"Split {split!r} of {path} has no tracks (looked in {folder}). "
                        f"{_LAYOUT_HELP}")
    make = _wav_track if layout == "wav" else _stem_track
    return [make(entries[n], split) for n in names]
