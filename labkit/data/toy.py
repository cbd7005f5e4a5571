"""toy-MUSDB: the built-in data set, synthesised on demand in the MUSDB18-HQ layout.

>>> from labkit.data import toy
>>> root = toy.ensure()                    # "fast" in fast mode, else "full"; cached
>>> import musdb; mus = musdb.DB(root=root, is_wav=True, subsets="test")

Every track is music, not noise: a tempo, a key and a chord progression; a bass line on the
chord roots; a drum groove with fills; a sung line with vowels, consonants, breaths, vibrato,
glides and rests; two to four harmony and melody instruments, often in the singer's register.
Each stem draws one of several sound engines per track (:data:`ENGINES`), and timbre, levels,
EQ, stereo image and reverb vary per track, so that a model has to learn "voice", not one
synthesiser's fingerprint.

Layout (the one the ``musdb`` package reads with ``is_wav=True``)::

    root/manifest.json                      config, versions, splits (train / valid / test)
    root/{train,test}/<track>/{mixture,vocals,drums,bass,other}.wav
    root/{train,test}/<track>/meta.json     tempo, key, chords, notes, engines, gains, EQ, seed

WAVs are 16-bit PCM (as in MUSDB18-HQ, and what musdb decodes to anyway); the mixture is the
integer sum of the quantised stems, so ``mixture == vocals + drums + bass + other`` holds exactly
after reading. Generation is deterministic (same config, same bytes), idempotent (a complete
folder returns at once), atomic per track (a killed run never leaves a track that looks complete)
and resumable (only missing tracks are rendered).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from labkit.errors import DataError

STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
FORMAT_VERSION = 1
"""Bumped whenever the synthesiser's output changes, so that caches are not mixed up."""

PRESETS: dict[str, dict[str, Any]] = {
    "full": {"n_train": 40, "n_test": 10, "seconds": 20.0, "sample_rate": 44100,
             "stereo": True, "seed": 0},
    "fast": {"n_train": 6, "n_test": 3, "seconds": 8.0, "sample_rate": 44100, "stereo": True,
             "seed": 0},
}
"""``ensure`` presets: "full" for the course, "fast" for fast mode and CI."""

_SPLIT_CODES = {"train": 0, "test": 1}
_FILES = (*(f"{s}.wav" for s in ("mixture", *STEMS)), "meta.json")
_PCM_SCALE = 32768.0


def _engines() -> dict[str, tuple[str, ...]]:
    from labkit.data.synth import bass, drums, other, vocals

    return {"vocals": vocals.ENGINES, "drums": drums.ENGINES, "bass": bass.ENGINES,
            "other": other.ENGINES}


ENGINES: dict[str, tuple[str, ...]] = _engines()
"""The sound engines each stem can draw from (see :mod:`labkit.data.synth`)."""


# --------------------------------------------------------------------------- paths
def default_root() -> Path:
    """Where labkit caches data: ``$LABKIT_DATA``, else ``$XDG_CACHE_HOME/labkit``, else
    ``~/.cache/labkit``. toy-MUSDB lives in ``<that>/toy-musdb/<preset or config hash>/``."""
    env = os.environ.get("LABKIT_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "labkit"


# --------------------------------------------------------------------------- one track
def check_engines(engines: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]] | None:
    """Validate an engine restriction ``{stem: [engine, ...]}``; returns it normalised (sorted).

    Stems left out may use every engine. Raises DataError naming the unknown stem or engine and
    what is available.
    """
    if engines is None:
        return None
    if not isinstance(engines, Mapping):
        raise DataError(f"engines={engines!r}: expected a dict {{stem: [engine, ...]}}, e.g. "
                        "{'vocals': ['klatt', 'fof']}")
    out = {}
    for stem, names in engines.items():
        if stem not in ENGINES:
            raise DataError(f"engines has unknown stem {stem!r}: use {', '.join(ENGINES)}")
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in ENGINES[stem]]
        if unknown or not names:
            raise DataError(f"engines[{stem!r}] = {names!r}: {stem} engines are "
                            f"{', '.join(ENGINES[stem])} (give at least one)")
        out[stem] = sorted(set(names))
    return {s: out[s] for s in ENGINES if s in out} or None


def render_track(seed: int, seconds: float = 20.0, sample_rate: int = 44100, stereo: bool = True,
                 engines: dict[str, list[str]] | None = None
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """Synthesise one track: its four stems and a description of everything drawn for it.

    ``seed`` fixes every random choice; ``engines`` restricts which sound engines each stem may
    draw from (``{stem: [engine, ...]}``, see :data:`ENGINES`; e.g. for transfer experiments).

    Returns ``(stems, meta)``: ``stems`` maps ``vocals, drums, bass, other`` to float32
    ``(channels, samples)`` arrays (2 channels if ``stereo``, else 1) on the 16-bit grid
    (multiples of 1/32768), scaled together so that their sum, the mixture, peaks below 1. Summing
    them in any order is exact. ``meta`` (JSON-ready) holds the seed, tempo, swing, key, chords,
    sections, the notes of voice and bass, each stem's engine and parameters, gains, EQ, reverb.
    """
    from labkit.data.synth import bass, drums, mix, other, vocals
    from labkit.data.synth.music import make_score

    if not seconds > 0 or sample_rate < 8000 or int(seed) < 0:
        raise DataError(f"seed={seed!r}, seconds={seconds!r}, sample_rate={sample_rate!r}: need "
                        "a seed >= 0, seconds > 0 and a sample rate of at least 8000 Hz")
    allowed = {s: list(e) for s, e in ENGINES.items()}
    allowed.update(check_engines(engines) or {})
    seq = np.random.SeedSequence(int(seed))
    r_score, r_pick, r_vocals, r_drums, r_bass, r_other, r_mix = (
        np.random.default_rng(s) for s in seq.spawn(7))
    score = make_score(r_score, float(seconds))
    sr = int(sample_rate)
    chosen = {s: str(r_pick.choice(allowed[s])) for s in ("vocals", "drums", "bass")}
    parts = {
        "vocals": vocals.render(chosen["vocals"], score, r_vocals, sr),
        "drums": drums.render(chosen["drums"], score, r_drums, sr),
        "bass": bass.render(chosen["bass"], score, r_bass, sr),
        "other": other.render(allowed["other"], score, r_other, sr),
    }
    channels = 2 if stereo else 1
    n = round(seconds * sr)
    finished, chains = {}, {}
    for stem in STEMS:
        finished[stem], chains[stem] = mix.process_stem(stem, parts[stem].layers, channels,
                                                        n, sr, score.beat, r_mix)
    balanced, levels = mix.balance(finished, r_mix, sr)
    mixture = balanced["vocals"] + balanced["drums"] + balanced["bass"] + balanced["other"]
    peak_target = float(r_mix.uniform(0.6, 0.95))
    peak = float(np.abs(mixture).max())
    gain = peak_target / peak if peak > 0 else 1.0
    stems = {s: _quantise(balanced[s] * np.float32(gain)) for s in STEMS}
    meta = {
        "seed": int(seed), "seconds": float(seconds), "sample_rate": sr, "channels": channels,
        "format_version": FORMAT_VERSION,
        **score.meta(),
        "engines": {"vocals": chosen["vocals"], "drums": chosen["drums"],
                    "bass": chosen["bass"], "other": parts["other"].meta["engines"]},
        "vocals": parts["vocals"].meta, "drums": parts["drums"].meta,
        "bass": parts["bass"].meta, "other": parts["other"].meta,
        "mix": {**levels, "chains": chains, "master_gain_db": round(20 * np.log10(gain), 3),
                "mixture_peak": round(peak_target, 4)},
    }
    return stems, meta


def _quantise(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to the 16-bit grid (float32 multiples of 1/32768)."""
    q = np.clip(np.round(x * _PCM_SCALE), -32768, 32767)
    return (q / _PCM_SCALE).astype(np.float32)


def _to_pcm(x: np.ndarray) -> np.ndarray:
    """Grid values ``(channels, samples)`` -> int16 ``(samples, channels)`` for soundfile."""
    return np.round(x * _PCM_SCALE).astype(np.int16).T


def _write_track(folder: Path, stems: dict[str, np.ndarray], meta: dict, sr: int) -> None:
    pcm = {s: _to_pcm(stems[s]) for s in STEMS}
    mixture = sum(p.astype(np.int32) for p in pcm.values())
    if mixture.min() < -32768 or mixture.max() > 32767:
        raise DataError(f"{folder.name}: the mixture would clip ({mixture.min()}..{mixture.max()})")
    for stem, data in (("mixture", mixture.astype(np.int16)), *pcm.items()):
        sf.write(str(folder / f"{stem}.wav"), data, sr, subtype="PCM_16", format="WAV")
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


# --------------------------------------------------------------------------- the data set
def _config(n_train: int, n_test: int, seconds: float, sample_rate: int, stereo: bool, seed: int,
            engines, test_engines) -> dict[str, Any]:
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{name}={value!r}: expected a whole number >= 0")
    if n_train + n_test == 0:
        raise DataError("n_train + n_test is 0: ask for at least one track")
    if not seconds > 0 or int(sample_rate) < 8000:
        raise DataError(f"seconds={seconds!r}, sample_rate={sample_rate!r}: need seconds > 0 "
                        "and a sample rate of at least 8000 Hz")
    return {"n_train": int(n_train), "n_test": int(n_test), "seconds": float(seconds),
            "sample_rate": int(sample_rate), "stereo": bool(stereo), "seed": int(seed),
            "engines": check_engines(engines), "test_engines": check_engines(test_engines),
            "format_version": FORMAT_VERSION}


def _folder_name(config: dict[str, Any]) -> str:
    """The preset's name (with the format version) if ``config`` is a preset, else a hash."""
    for name, preset in PRESETS.items():
        if config == _config(**preset, engines=None, test_engines=None):
            return f"{name}-v{FORMAT_VERSION}"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"custom-{digest}"


def track_seed(seed: int, split: str, index: int) -> int:
    """The seed of track ``index`` of ``split`` in a data set generated with ``seed``."""
    state = np.random.SeedSequence([int(seed) % 2**32, _SPLIT_CODES[split], int(index)])
    return int(state.generate_state(1)[0])


def _track_list(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Name, seed and engines of every track.

    The voice, drum and bass engines go round a shuffled list of the allowed ones, so that even a
    small split hears each engine about equally often (a random draw per track would not).
    """
    out = []
    for split, count in (("train", config["n_train"]), ("test", config["n_test"])):
        allowed = {s: list(e) for s, e in ENGINES.items()}
        restriction = (config["test_engines"] or config["engines"]) if split == "test" else (
            config["engines"])
        allowed.update(restriction or {})
        rng = np.random.default_rng([int(config["seed"]) % 2**32, _SPLIT_CODES[split], 7])
        order = {s: [str(e) for e in rng.permutation(allowed[s])] for s in ("vocals", "drums",
                                                                          "bass")}
        for i in range(count):
            engines = {s: [order[s][i % len(order[s])]] for s in order}
            engines["other"] = allowed["other"]
            out.append({"split": split, "name": f"toy-{split}-{i:03d}",
                        "seed": track_seed(config["seed"], split, i), "engines": engines})
    return out


def _valid_names(train: list[str]) -> list[str]:
    """Train tracks held out for validation: every 5th (the last one if that picks none)."""
    chosen = train[4::5]
    return chosen or (train[-1:] if len(train) >= 2 else [])


def _manifest(config: dict[str, Any], tracks: list[dict[str, Any]]) -> dict[str, Any]:
    from labkit import __version__

    train = [t["name"] for t in tracks if t["split"] == "train"]
    return {"dataset": "toy-musdb", "format_version": FORMAT_VERSION, "labkit": __version__,
            "config": config, "stems": list(STEMS), "train": train,
            "valid": _valid_names(train),
            "test": [t["name"] for t in tracks if t["split"] == "test"],
            "tracks": _track_table(tracks)}


def _track_table(tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``tracks`` entry: name -> split, seed and engines."""
    return {t["name"]: {"split": t["split"], "seed": t["seed"], "engines": t["engines"]}
            for t in tracks}


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _FILES)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _check_root(root: Path, config: dict[str, Any]) -> bool:
    """Raise DataError if ``root`` holds something else; True if it has our manifest."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file: pass a folder for the generated data set")
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{manifest} is not valid JSON ({err}): delete {root} to "
                            "regenerate the data set") from err
        old = found.get("config") if isinstance(found, dict) else None
        if old == config and found.get("tracks") != _track_table(_track_list(config)):
            raise DataError(f"{root} holds a toy-MUSDB set made by an earlier labkit, whose "
                            "tracks differ from what this version generates (seeds or sound "
                            f"engines). Delete {root} to regenerate it.")
        if old != config:
            diff = ", ".join(f"{k}={(old or {}).get(k)!r} (asked {v!r})" for k, v in config.items()
                             if (old or {}).get(k) != v) or "unreadable config"
            raise DataError(f"{root} already holds a toy-MUSDB set generated with another "
                            f"config: {diff}. Pass another root, or delete {root} to regenerate.")
        return True
    if root.exists() and any(p.name != ".partial" for p in root.iterdir()):
        raise DataError(f"{root} is not empty and has no toy-MUSDB manifest.json: pick an empty "
                        "or new folder for the generated data set")
    return False


def _make_track(root: str, split: str, name: str, seed: int, seconds: float, sample_rate: int,
                stereo: bool, engines: dict[str, list[str]] | None) -> str:
    """Render one track into a temporary folder, then move it into place (atomically)."""
    root_path = Path(root)
    final = root_path / split / name
    stems, meta = render_track(seed, seconds, sample_rate, stereo, engines)
    # render_track(**meta["render"]) gives this track again, sample for sample.
    render = {"seed": seed, "seconds": seconds, "sample_rate": sample_rate, "stereo": stereo,
              "engines": engines}
    meta = {"name": name, "split": split, "render": render, **meta}
    tmp = root_path / ".partial" / f"{split}-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _write_track(tmp, stems, meta, sample_rate)
    if final.exists():
        if _complete(final):  # another process finished it meanwhile
            shutil.rmtree(tmp)
            return name
        shutil.rmtree(final)
    os.rename(tmp, final)
    return name


def generate(root: str | os.PathLike | None = None, n_train: int = 40, n_test: int = 10,
             seconds: float = 20.0, sample_rate: int = 44100, stereo: bool = True, seed: int = 0,
             engines: dict[str, list[str]] | None = None,
             test_engines: dict[str, list[str]] | None = None, workers: int | None = None,
             progress: bool = True) -> Path:
    """Generate (or complete) a toy-MUSDB data set; returns its root folder.

    ``root=None`` uses ``default_root()/toy-musdb/<name>``, where the name is the preset's (e.g.
    ``full-v1``) when the config equals one of :data:`PRESETS`, else a hash of the config.
    ``engines`` restricts the engines of every track (``{stem: [engine, ...]}``); ``test_engines``
    overrides it for the test split (train on some engines, test on others). ``workers`` processes
    render tracks in parallel (default ``min(2, cpu_count)``).

    Idempotent: if ``root`` holds this config and every file, returns at once; missing or partial
    tracks are (re)generated; a folder holding another config raises :class:`DataError`.
    """
    config = _config(n_train, n_test, seconds, sample_rate, stereo, seed, engines, test_engines)
    root = Path(root).expanduser() if root is not None else (
        default_root() / "toy-musdb" / _folder_name(config))
    has_manifest = _check_root(root, config)
    tracks = _track_list(config)
    missing = [t for t in tracks if not _complete(root / t["split"] / t["name"])]
    if not missing and has_manifest:
        return root
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    if not has_manifest:
        _write_json_atomic(root / "manifest.json", _manifest(config, tracks))
    _clean_partial(root / ".partial")
    jobs = [(str(root), t["split"], t["name"], t["seed"], config["seconds"],
             config["sample_rate"], config["stereo"], t["engines"]) for t in missing]
    _run(jobs, workers, progress)
    _clean_partial(root / ".partial")
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # it exists, but belongs to someone else
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    return True


def _clean_partial(folder: Path) -> None:
    """Remove tracks left half-written by killed runs (their writer's process is gone).

    Folders of a live process are kept: another ``generate`` may be working in the same root.
    """
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        pid = entry.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(entry, ignore_errors=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: someone is still writing


def _run(jobs: list[tuple], workers: int | None, progress: bool) -> None:
    """Render ``jobs`` with a pool of processes (or in this one), with a progress bar."""
    from tqdm.auto import tqdm

    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    workers = max(1, min(int(workers), len(jobs)))
    bar = tqdm(total=len(jobs), desc="toy-MUSDB", unit="track", disable=not progress)
    try:
        if workers == 1:
            for job in jobs:
                _make_track(*job)
                bar.update()
            return
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_make_track, *job) for job in jobs]
            for future in as_completed(futures):
                future.result()
                bar.update()
    finally:
        bar.close()


def ensure(preset: str = "auto", root: str | os.PathLike | None = None,
           progress: bool = True) -> Path:
    """The toy-MUSDB data set of ``preset``, generated on first use; returns its root.

    ``preset``: ``"full"`` (40 train + 10 test tracks of 20 s, 44.1 kHz stereo: about 1 CPU-second
    per track, well under a minute on 2 free cores, 0.9 GB on disk), ``"fast"`` (6 + 3 tracks of
    8 s, 64 MB: a few seconds) or ``"auto"`` (``"fast"`` in fast mode, see
    :func:`labkit.fast_mode`, else ``"full"``). Pass the root to musdb
    (``musdb.DB(root, is_wav=True)``) or to :func:`labkit.data.find_tracks`.
    """
    from labkit.core import fast_mode

    if preset == "auto":
        preset = "fast" if fast_mode() else "full"
    if preset not in PRESETS:
        raise DataError(f"preset={preset!r}: use one of auto, {', '.join(PRESETS)}")
    return generate(root=root, **PRESETS[preset], progress=progress)
