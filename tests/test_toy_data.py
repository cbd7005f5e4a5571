"""toy-MUSDB: layout, exactness, determinism, caching, musdb compatibility and musical structure.

Tiny settings (a few seconds at 22.05 kHz) keep this file fast; the musical checks measure the
audio (pitch, vibrato, onsets, spectra) and compare with what the track's meta.json says.
"""
from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from labkit.data import toy
from labkit.errors import DataError

SR = 22050
SMALL = {"n_train": 2, "n_test": 2, "seconds": 3.0, "sample_rate": SR, "stereo": True, "seed": 3}
FILES = ("mixture.wav", "vocals.wav", "drums.wav", "bass.wav", "other.wav", "meta.json")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return toy.generate(tmp_path_factory.mktemp("toy") / "set", **SMALL, workers=1,
                        progress=False)


def _pcm(path):
    data, sr = sf.read(str(path), dtype="int16", always_2d=True)
    return data, sr


def _tracks(root):
    return sorted(p for split in ("train", "test") for p in (root / split).iterdir())


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


# --------------------------------------------------------------------------- layout and files
def test_layout_manifest_and_files(small_root):
    manifest = json.loads((small_root / "manifest.json").read_text())
    assert manifest["dataset"] == "toy-musdb"
    assert manifest["format_version"] == toy.FORMAT_VERSION
    assert manifest["config"]["n_train"] == 2 and manifest["config"]["sample_rate"] == SR
    assert manifest["train"] == ["toy-train-000", "toy-train-001"]
    assert manifest["test"] == ["toy-test-000", "toy-test-001"]
    assert manifest["valid"] == ["toy-train-001"]
    assert sorted(p.name for p in small_root.iterdir()) == ["manifest.json", "test", "train"]
    for folder in _tracks(small_root):
        assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
        for name in FILES[:-1]:
            info = sf.info(str(folder / name))
            assert (info.samplerate, info.channels, info.frames) == (SR, 2, 3 * SR)
            assert info.subtype == "PCM_16"
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["name"] == folder.name and meta["split"] == folder.parent.name
        assert meta["seed"] == manifest["tracks"][folder.name]["seed"]
        assert 60 <= meta["tempo"] <= 180 and meta["chords"] and meta["key"]
        for stem in ("vocals", "drums", "bass"):
            assert meta["engines"][stem] in toy.ENGINES[stem]
        assert set(meta["engines"]["other"]) <= set(toy.ENGINES["other"])


def test_mixture_is_exactly_the_sum_of_the_stems(small_root):
    for folder in _tracks(small_root):
        stems = {s: _pcm(folder / f"{s}.wav")[0].astype(np.int32) for s in toy.STEMS}
        mixture = _pcm(folder / "mixture.wav")[0].astype(np.int32)
        np.testing.assert_array_equal(mixture, sum(stems.values()))
        # Read as floats (the usual way), the sum is exact too, in any order.
        floats = {s: sf.read(str(folder / f"{s}.wav"), dtype="float32")[0] for s in toy.STEMS}
        mix = sf.read(str(folder / "mixture.wav"), dtype="float32")[0]
        assert np.array_equal(mix, floats["other"] + floats["bass"] + floats["drums"]
                              + floats["vocals"])
        assert 0.3 < np.abs(mix).max() < 1.0  # loud, but no clipping


def test_render_track_reproduces_the_files(small_root):
    folder = small_root / "test" / "toy-test-001"
    meta = json.loads((folder / "meta.json").read_text())
    stems, again = toy.render_track(**meta["render"])
    assert again["tempo"] == meta["tempo"] and again["engines"] == meta["engines"]
    for stem in toy.STEMS:
        audio = sf.read(str(folder / f"{stem}.wav"), dtype="float32", always_2d=True)[0].T
        assert stems[stem].dtype == np.float32 and stems[stem].shape == (2, 3 * SR)
        np.testing.assert_array_equal(stems[stem], audio)


# --------------------------------------------------------------------------- determinism, caching
def test_generation_is_deterministic_and_seeded(small_root, tmp_path):
    # Same config in a pool of two workers: bit-identical files.
    again = toy.generate(tmp_path / "again", **SMALL, workers=2, progress=False)
    assert _snapshot(again) == _snapshot(small_root)
    other = toy.generate(tmp_path / "other", **{**SMALL, "seed": 4, "n_train": 1, "n_test": 1},
                         workers=1, progress=False)
    a = (small_root / "test" / "toy-test-000" / "vocals.wav").read_bytes()
    b = (other / "test" / "toy-test-000" / "vocals.wav").read_bytes()
    assert a != b


def test_generate_is_idempotent(small_root):
    stamps = {p: p.stat().st_mtime_ns for p in small_root.rglob("*") if p.is_file()}
    assert toy.generate(small_root, **SMALL, progress=False) == small_root
    assert {p: p.stat().st_mtime_ns for p in small_root.rglob("*") if p.is_file()} == stamps


def test_another_config_in_the_same_root_is_an_error(small_root):
    with pytest.raises(DataError, match=r"another config: n_train=2 \(asked 3\)"):
        toy.generate(small_root, **{**SMALL, "n_train": 3}, progress=False)
    with pytest.raises(DataError, match="another config: .*engines"):
        toy.generate(small_root, **SMALL, engines={"vocals": ["fof"]}, progress=False)


def test_a_set_made_by_an_earlier_generator_is_refused(small_root, tmp_path):
    # A cache whose manifest has the same config but other tracks (an older synthesiser's seeds
    # or engines, or a manifest from before tracks were listed) must not pass as this version's.
    import shutil

    for change in ("seed", "engines", "missing"):
        root = tmp_path / change
        shutil.copytree(small_root, root)
        manifest = json.loads((root / "manifest.json").read_text())
        first = next(iter(manifest["tracks"].values()))
        if change == "seed":
            first["seed"] += 1
        elif change == "engines":
            first["engines"]["vocals"] = ["some-old-engine"]
        else:
            del manifest["tracks"]
        (root / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(DataError, match="made by an earlier labkit.*Delete"):
            toy.generate(root, **SMALL, progress=False)


def test_a_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and has no toy-MUSDB manifest"):
        toy.generate(tmp_path, **SMALL, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_partial_and_damaged_tracks_are_regenerated(tmp_path):
    config = {**SMALL, "n_train": 1, "n_test": 1}
    root = toy.generate(tmp_path / "set", **config, workers=1, progress=False)
    before = _snapshot(root)
    # A killed run: a track folder missing files, and a temporary folder left behind.
    (root / "test" / "toy-test-000" / "vocals.wav").unlink()
    (root / "test" / "toy-test-000" / "meta.json").unlink()
    shutil.rmtree(root / "train" / "toy-train-000")
    (root / "train" / "toy-train-000").mkdir()
    (root / "train" / "toy-train-000" / "mixture.wav").write_bytes(b"half a file")
    (root / ".partial" / "test-toy-test-000-999999999").mkdir(parents=True)  # a dead writer
    assert toy.generate(root, **config, workers=1, progress=False) == root
    assert _snapshot(root) == before
    assert not (root / ".partial").exists()


def test_engine_restrictions_are_checked_and_applied(tmp_path):
    with pytest.raises(DataError, match="unknown stem 'voice'"):
        toy.render_track(0, 1.0, SR, engines={"voice": ["fof"]})
    with pytest.raises(DataError, match=r"engines\['drums'\] = \['tabla'\]: drums engines are "
                                        "acoustic, electronic"):
        toy.render_track(0, 1.0, SR, engines={"drums": ["tabla"]})
    root = toy.generate(tmp_path / "transfer", n_train=3, n_test=2, seconds=1.0, sample_rate=SR,
                        stereo=False, engines={"vocals": ["klatt", "rap"]},
                        test_engines={"vocals": ["fof"], "other": ["organ", "piano"]},
                        workers=1, progress=False)
    metas = {p.name: json.loads((p / "meta.json").read_text()) for p in _tracks(root)}
    train = [m["engines"]["vocals"] for n, m in metas.items() if n.startswith("toy-train")]
    assert sorted(set(train)) == ["klatt", "rap"]  # the engines take turns
    for name, meta in metas.items():
        if name.startswith("toy-test"):
            assert meta["engines"]["vocals"] == "fof"
            assert set(meta["engines"]["other"]) <= {"organ", "piano"}


def test_default_root_and_ensure(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert toy.default_root() == tmp_path / "xdg" / "labkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert toy.default_root() == tmp_path / "home" / ".cache" / "labkit"
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "data"))
    assert toy.default_root() == tmp_path / "data"

    tiny = {**SMALL, "n_train": 1, "n_test": 1, "seconds": 1.0, "stereo": False}
    monkeypatch.setitem(toy.PRESETS, "fast", tiny)
    monkeypatch.setenv("LABKIT_FAST", "1")
    root = toy.ensure(progress=False)
    assert root == tmp_path / "data" / "toy-musdb" / f"fast-v{toy.FORMAT_VERSION}"
    assert toy.ensure("fast", progress=False) == root
    assert (root / "test" / "toy-test-000" / "vocals.wav").is_file()
    # Any other config gets a folder of its own, named by a hash of the config.
    custom = toy.generate(**{**tiny, "seed": 9}, progress=False)
    assert custom.parent == root.parent and custom.name.startswith("custom-")
    with pytest.raises(DataError, match="preset='huge': use one of auto, full, fast"):
        toy.ensure("huge")


@pytest.mark.ffmpeg
def test_musdb_reads_the_data_set(small_root):
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("musdb needs the ffmpeg and ffprobe binaries")
    import musdb

    mus = musdb.DB(root=str(small_root), is_wav=True, subsets="test")
    assert [t.name for t in mus.tracks] == ["toy-test-000", "toy-test-001"]
    track = mus.tracks[1]
    assert track.rate == SR
    folder = small_root / "test" / track.name
    ours = {s: sf.read(str(folder / f"{s}.wav"), always_2d=True)[0] for s in
            ("mixture", *toy.STEMS)}
    np.testing.assert_array_equal(track.audio, ours["mixture"])  # (samples, channels)
    np.testing.assert_array_equal(track.targets["vocals"].audio, ours["vocals"])
    np.testing.assert_array_equal(track.targets["accompaniment"].audio,
                                  ours["drums"] + ours["bass"] + ours["other"])


# --------------------------------------------------------------------------- musical structure
def _yin(x: np.ndarray, sr: int, fmin: float, fmax: float) -> float:
    """f0 of a short mono frame by YIN (de Cheveigne & Kawahara 2002), in Hz."""
    x = x - x.mean()
    max_lag = int(sr / fmin) + 1
    min_lag = max(int(sr / fmax), 2)
    n = x.size - max_lag
    d = np.array([np.sum((x[:n] - x[lag:lag + n]) ** 2) for lag in range(max_lag + 1)])
    cmnd = np.concatenate([[1.0], d[1:] * np.arange(1, max_lag + 1)
                           / np.maximum(np.cumsum(d[1:]), 1e-12)])
    below = np.flatnonzero(cmnd[min_lag:] < 0.15)
    lag = min_lag + (below[0] if below.size else int(np.argmin(cmnd[min_lag:])))
    while lag + 1 <= max_lag and cmnd[lag + 1] < cmnd[lag]:
        lag += 1
    a, b, c = cmnd[lag - 1], cmnd[lag], cmnd[min(lag + 1, max_lag)]
    denom = a - 2 * b + c
    return sr / (lag + (0.5 * (a - c) / denom if denom > 0 else 0.0))


def _onsets(x: np.ndarray, sr: int, hop: int = 64, win: int = 256) -> np.ndarray:
    """Times (s) where the short-time energy jumps 10 dB above its last 30 ms (drum hits)."""
    n = (x.size - win) // hop
    energy = np.array([np.sum(x[i * hop:i * hop + win] ** 2) for i in range(n)])
    level = 10 * np.log10(energy + 1e-10)
    back = int(0.03 * sr / hop)
    past = np.array([level[max(0, i - back):max(1, i - 2)].max() for i in range(n)])
    hits = np.flatnonzero((level - past > 10) & (level > level.max() - 40))
    kept: list[int] = []
    for h in hits:
        if not kept or h - kept[-1] > int(0.06 * sr / hop):
            kept.append(h)
    return (np.array(kept) * hop + win) / sr


def _grid(meta: dict, shift: float = 0.0) -> np.ndarray:
    """The sixteenth-note grid of a track (with its swing), optionally shifted by ``shift`` steps."""
    sixteenth = 60.0 / meta["tempo"] / 4
    steps = np.arange(-64, 64 * 4)
    swing = np.where(steps % 2 == 1, meta["swing"], 0.0)
    return meta["first_downbeat"] + (steps + swing + shift) * sixteenth


@pytest.mark.parametrize("engine", toy.ENGINES["bass"])
def test_bass_plays_the_chord_roots(engine):
    stems, meta = toy.render_track(18, 6.0, SR, stereo=False, engines={"bass": [engine]})
    bass = stems["bass"][0]
    checked = 0
    for note in meta["bass"]["notes"]:
        if not note["chord_root"] or note["start"] < 0:
            continue
        length = min(note["end"] - note["start"], 0.25)
        a, b = int((note["start"] + 0.03) * SR), int((note["start"] + length) * SR)
        if b - a < int(0.06 * SR) or b > bass.size:
            continue
        f0 = _yin(bass[a:b], SR, 25.0, 400.0)
        chord = [c for c in meta["chords"] if c["start"] <= note["start"] + 1e-3][-1]
        semitones = 12 * np.log2(f0 / 440.0) + 69
        # The pitch class of the measured fundamental is the chord's root, within 40 cents.
        assert abs((semitones - chord["root_pc"] + 6) % 12 - 6) < 0.4, (note, chord, f0)
        checked += 1
    assert checked >= 3


def test_the_voice_has_rests():
    levels = []
    for seed in (0, 1, 2):
        stems, meta = toy.render_track(seed, 8.0, SR, stereo=False, engines={"vocals": ["klatt"]})
        voice = stems["vocals"][0]
        notes = meta["vocals"]["notes"]

        def power(a, b, voice=voice):
            return float(np.mean(voice[max(int(a * SR), 0):int(b * SR)] ** 2))

        sung = np.mean([power(n["start"], n["end"]) for n in notes])
        for a, b in itertools.pairwise(notes):
            if b["start"] - a["end"] >= 0.3:
                levels.append(10 * np.log10(power(a["end"] + 0.15, b["start"] - 0.05) / sung))
    assert len(levels) >= 3
    # Rests are quiet (what is left is reverb, echoes and breaths).
    assert np.median(levels) < -12, levels


def test_the_voice_has_vibrato_at_the_drawn_rate():
    measured = []
    for seed in range(8):
        stems, meta = toy.render_track(seed, 8.0, SR, stereo=False,
                                       engines={"vocals": ["klatt", "additive", "fof"]})
        voice, character = stems["vocals"][0], meta["vocals"]["voice"]
        for note in meta["vocals"]["notes"]:
            times = np.arange(note["start"] + 0.3, min(note["end"], 8.0) - 0.05, 0.01)
            if times.size < 25:
                continue
            half = int(0.02 * SR)
            f0 = np.array([_yin(voice[int(t * SR) - half:int(t * SR) + half], SR, 70, 1100)
                           for t in times])
            cents = 1200 * np.log2(f0 / np.median(f0))
            cents -= np.polyval(np.polyfit(times, cents, 1), times)
            if np.abs(cents).max() > 300:  # an octave error of the pitch tracker
                continue
            spectrum = np.abs(np.fft.rfft(cents * np.hanning(cents.size), 1024))
            freqs = np.fft.rfftfreq(1024, 0.01)
            band = freqs > 2.0
            rate = freqs[band][np.argmax(spectrum[band])]
            measured.append((rate, np.std(cents), character["vibrato_rate"]))
        if len(measured) >= 3:
            break
    assert len(measured) >= 3
    for rate, depth, drawn in measured:
        assert abs(rate - drawn) < 0.8 and depth > 8, measured


@pytest.mark.parametrize("engine", toy.ENGINES["drums"])
def test_drum_hits_sit_on_the_tempo_grid(engine):
    import scipy.signal

    stems, meta = toy.render_track(8, 6.0, SR, stereo=False, engines={"drums": [engine]})
    drums = stems["drums"][0]
    # Hits in the whole band and above 2 kHz (where a hi-hat is not masked by a long kick).
    high = scipy.signal.sosfilt(scipy.signal.butter(4, 2000, "highpass", fs=SR, output="sos"),
                                drums)
    hits = np.sort(np.concatenate([_onsets(drums, SR), _onsets(high, SR)]))
    hits = hits[np.concatenate([[True], np.diff(hits) > 0.03])]
    assert hits.size >= 6

    def on_grid(grid):
        return np.mean(np.min(np.abs(hits[:, None] - grid[None, :]), axis=1) < 0.015)

    assert on_grid(_grid(meta)) >= 0.85
    assert on_grid(_grid(meta, shift=0.5)) <= 0.15  # half a step off: the check can fail


def _band_db(x: np.ndarray, sr: int, low: float) -> float:
    """Energy above ``low`` Hz relative to the total, in dB."""
    power = np.abs(np.fft.rfft(x.mean(axis=0))) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / sr)
    return float(10 * np.log10(power[freqs > low].sum() / power.sum() + 1e-30))


@pytest.mark.parametrize("stem", list(toy.ENGINES))
def test_every_engine_renders_sanely(stem):
    for engine in toy.ENGINES[stem]:
        stems, _ = toy.render_track(21, 3.0, 44100, stereo=False, engines={stem: [engine]})
        x = stems[stem]
        assert np.isfinite(x).all()
        rms_db = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-30)
        assert -50 < rms_db < -6, (engine, rms_db)
        mixture = sum(stems.values())
        assert np.abs(mixture).max() < 1.0
        # Spectral balance: most energy low, little above 11 kHz (the old synth's drums were
        # nearly as loud up there as in their body; its bass had far too many harmonics).
        high = _band_db(x, 44100, 11000.0)
        limit = {"drums": -20.0, "bass": -45.0, "vocals": -25.0, "other": -30.0}[stem]
        assert high < limit, (engine, high)
        if stem == "bass":
            assert _band_db(x, 44100, 3000.0) < -25.0, engine
