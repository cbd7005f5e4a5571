"""Tracks, find_tracks and the torch data sets, on a tiny MUSDB18-HQ-shaped set built here."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from labkit.data import tracks as tracks_module
from labkit.data.datasets import FixedSegments, FullTracks, SegmentDataset
from labkit.data.tracks import STEMS, Track, find_tracks, musdb_validation_tracks
from labkit.errors import DataError

SR = 8000
TRAIN = {f"Artist {k} - Song {k}": 2.0 + 0.25 * k for k in range(6)}
TEST = {"Zed - Alpha": 2.5, "Zed - Beta": 3.0}


def write_track(folder: Path, seconds: float, seed: int, sr: int = SR, channels: int = 2,
                with_mixture: bool = True) -> dict[str, np.ndarray]:
    """Write one track of independent uniform noise per stem (so every segment is unique)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    stems = {}
    folder.mkdir(parents=True, exist_ok=True)
    for k, stem in enumerate(STEMS):
        audio = rng.uniform(-0.2, 0.2, (n, channels)) * (1.0 - 0.15 * k)
        sf.write(folder / f"{stem}.wav", audio, sr, subtype="PCM_16")
        stems[stem] = audio
    if with_mixture:
        sf.write(folder / "mixture.wav", sum(stems.values()), sr, subtype="PCM_16")
    return stems


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_musdb")
    for seed, (name, seconds) in enumerate(TRAIN.items()):
        write_track(root / "train" / name, seconds, seed)
    for seed, (name, seconds) in enumerate(TEST.items()):
        write_track(root / "test" / name, seconds, 100 + seed)
    return root


def file_stem(track: Track, stem: str) -> np.ndarray:
    """The whole stem as soundfile reads it: (channels, samples)."""
    data, _ = sf.read(track.stem_path(stem), dtype="float32", always_2d=True)
    return data.T


def locate(segment: np.ndarray, tracks: list[Track], stem: str) -> list[tuple[str, int, bool]]:
    """Every (track, offset, swapped) whose ``stem`` equals ``segment`` (channels, samples)."""
    found = []
    n = segment.shape[-1]
    for track in tracks:
        audio = file_stem(track, stem)
        for swapped in (False, True):
            ref = audio[::-1] if swapped else audio
            windows = np.lib.stride_tricks.sliding_window_view(ref[0], 8)
            for offset in np.flatnonzero((windows == segment[0, :8]).all(axis=1)):
                if offset + n <= ref.shape[-1] and np.array_equal(ref[:, offset:offset + n],
                                                                   segment):
                    found.append((track.name, int(offset), swapped))
    return found


# ------------------------------------------------------------------------------------------
# Track and find_tracks
# ------------------------------------------------------------------------------------------

def test_find_tracks_reads_metadata(tiny):
    tracks = find_tracks(tiny, "test")
    assert [t.name for t in tracks] == sorted(TEST)
    track = tracks[1]
    assert (track.split, track.sample_rate, track.num_channels, track.kind) == ("test", SR, 2, "wav")
    assert track.num_frames == round(TEST[track.name] * SR)
    assert track.duration == pytest.approx(TEST[track.name])


def test_track_load_matches_file_at_offsets(tiny):
    track = find_tracks(tiny, "test")[1]
    full = {s: file_stem(track, s) for s in STEMS}
    mixture, _ = sf.read(track.path / "mixture.wav", dtype="float32", always_2d=True)
    start, duration = 0.5, 0.25
    a, b = round(start * SR), round((start + duration) * SR)
    audio = track.load(("bass", "vocals", "accompaniment", "mixture"), start, duration)
    assert audio.dtype == np.float32 and audio.shape == (4, 2, b - a)
    np.testing.assert_array_equal(audio[0], full["bass"][:, a:b])
    np.testing.assert_array_equal(audio[1], full["vocals"][:, a:b])
    np.testing.assert_allclose(audio[2], (full["drums"] + full["bass"] + full["other"])[:, a:b],
                               atol=1e-6)
    np.testing.assert_array_equal(audio[3], mixture.T[:, a:b])  # the stored mixture
    np.testing.assert_array_equal(track.load_mixture(start, duration), mixture.T[:, a:b])
    whole = track.load()
    assert whole.shape == (4, 2, track.num_frames)
    np.testing.assert_array_equal(whole[3], full["other"])
    tail = track.load("drums", start=track.duration - 0.1, duration=0.3)  # runs past the end
    np.testing.assert_array_equal(tail[0, :, :800], full["drums"][:, -800:])
    assert tail.shape == (1, 2, 2400) and not tail[0, :, 800:].any()


def test_track_load_reads_only_needed_frames(tiny, monkeypatch):
    calls = []
    real_read = sf.read

    def spy(path, **kwargs):
        calls.append((Path(path).name, kwargs.get("start"), kwargs.get("frames")))
        return real_read(path, **kwargs)

    monkeypatch.setattr(tracks_module.sf, "read", spy)
    track = find_tracks(tiny, "test")[0]
    track.load(("vocals", "accompaniment"), start=1.0, duration=0.5)
    assert sorted(calls) == sorted((f"{s}.wav", 8000, 4000) for s in STEMS)


def test_mixture_without_file_is_sum_of_stems(tmp_path):
    stems = write_track(tmp_path / "test" / "A - B", 1.0, 0, with_mixture=False)
    track = find_tracks(tmp_path, "test")[0]
    assert not track.has_mixture
    expected = sum(s.astype(np.float32) for s in stems.values()).T
    np.testing.assert_allclose(track.load_mixture(), expected, atol=1e-3)  # 16-bit files


def test_splits_partition_the_train_folder(tiny):
    train = [t.name for t in find_tracks(tiny, "train")]
    valid = [t.name for t in find_tracks(tiny, "valid")]
    names = sorted(TRAIN)
    assert valid == names[4::5]  # every 5th track by name
    assert sorted(train + valid) == names and not set(train) & set(valid)
    assert [t.name for t in find_tracks(tiny, "train+valid")] == names
    assert all(t.split == "valid" for t in find_tracks(tiny, "valid"))
    chosen = [names[1], names[3]]
    assert [t.name for t in find_tracks(tiny, "valid", valid_tracks=chosen)] == chosen
    assert [t.name for t in find_tracks(tiny, "train", subset=2)] == train[:2]
    assert [t.name for t in find_tracks(tiny, "test", subset=["Zed - Beta"])] == ["Zed - Beta"]


def test_valid_split_from_manifest_and_musdb_list(tmp_path):
    official = musdb_validation_tracks()
    assert "Actions - One Minute Smile" in official and len(official) == 14
    for k, name in enumerate(["Actions - One Minute Smile", "Other - Song", "Third - Song"]):
        write_track(tmp_path / "train" / name, 0.5, k)
    # Real MUSDB18 names: musdb's official validation list applies.
    assert [t.name for t in find_tracks(tmp_path, "valid")] == ["Actions - One Minute Smile"]
    # A manifest's "valid" list wins over it.
    (tmp_path / "manifest.json").write_text(json.dumps({"valid": ["Third - Song"]}))
    assert [t.name for t in find_tracks(tmp_path, "valid")] == ["Third - Song"]
    assert [t.name for t in find_tracks(tmp_path, "train")] == [
        "Actions - One Minute Smile", "Other - Song"]


def test_musdb_path_root(tiny, monkeypatch):
    monkeypatch.setenv("MUSDB_PATH", str(tiny))
    assert [t.name for t in find_tracks("musdb", "test")] == sorted(TEST)
    monkeypatch.delenv("MUSDB_PATH")
    with pytest.raises(DataError, match="MUSDB_PATH environment variable, which is not set"):
        find_tracks("musdb", "test")


def test_find_tracks_errors(tiny, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"nowhere does not exist\. Expected the MUSDB18-HQ layout"):
        find_tracks(missing)
    wrong = tmp_path / "wrong"
    (wrong / "songs").mkdir(parents=True)
    (wrong / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"neither data set layout \(found: notes.txt, songs\)"
                                        r".*sigsep"):
        find_tracks(wrong)
    with pytest.raises(DataError, match="pass the folder above train/ and test/"):
        find_tracks(tiny / "train")
    only_train = tmp_path / "only_train"
    write_track(only_train / "train" / "Solo - Song", 0.5, 0)
    (only_train / "train" / ".ipynb_checkpoints").mkdir()  # Jupyter debris is not a track
    assert [t.name for t in find_tracks(only_train, "train")] == ["Solo - Song"]
    with pytest.raises(DataError, match=r"Split 'test' is empty: .*only_train/test does not exist"):
        find_tracks(only_train, "test")
    with pytest.raises(DataError, match="Split 'valid' of .*only_train has no tracks"):
        find_tracks(only_train, "valid")  # one train track: nothing to hold out
    with pytest.raises(DataError, match="Unknown split 'validation': use one of train, valid"):
        find_tracks(tiny, "validation")
    with pytest.raises(DataError, match="has no track named 'Nope'"):
        find_tracks(tiny, "test", subset=["Nope"])
    with pytest.raises(DataError, match="Unknown target 'voice'"):
        find_tracks(tiny, "test")[0].load("voice")


def test_find_tracks_rejects_inconsistent_stems(tmp_path):
    folder = tmp_path / "test" / "Bad - Track"
    write_track(folder, 1.0, 0)
    sf.write(folder / "bass.wav", np.zeros((4000, 2)), 4000)  # same length in s, other rate
    with pytest.raises(DataError, match=r"Bad - Track: stems differ \(.*bass.wav: 4000 Hz"):
        find_tracks(tmp_path, "test")
    sf.write(folder / "bass.wav", np.zeros((7000, 2)), SR)
    with pytest.raises(DataError, match=r"bass.wav: 8000 Hz, 7000 frames"):
        find_tracks(tmp_path, "test")
    (folder / "bass.wav").unlink()
    with pytest.raises(DataError, match=r"Bad - Track lacks bass.wav"):
        find_tracks(tmp_path, "test")


# ------------------------------------------------------------------------------------------
# SegmentDataset
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("random_mix,gain,swap", [(True, (0.25, 1.25), True),
                                                   (False, (0.25, 1.25), True),
                                                   (True, None, False), (False, None, False)])
@pytest.mark.parametrize("targets", [STEMS, ("vocals", "accompaniment")])
def test_segment_mixture_is_sum_of_targets(tiny, random_mix, gain, swap, targets):
    data = SegmentDataset(find_tracks(tiny, "train"), segment_seconds=0.5, targets=targets,
                          samples_per_epoch=6, random_mix=random_mix, gain=gain,
                          channel_swap=swap)
    for mixture, target in data:
        assert mixture.dtype == target.dtype == torch.float32
        assert mixture.shape == (2, 4000) and target.shape == (len(targets), 2, 4000)
        torch.testing.assert_close(target.sum(0), mixture, atol=1e-6, rtol=0)
        assert mixture.abs().max() > 0.05


def test_segments_are_real_excerpts_of_the_tracks(tiny):
    tracks = find_tracks(tiny, "train")
    kwargs = {"segment_seconds": 0.25, "samples_per_epoch": 8, "gain": None,
              "channel_swap": False}
    mixed = SegmentDataset(tracks, random_mix=True, **kwargs)
    whole = SegmentDataset(tracks, random_mix=False, **kwargs)
    sources_per_item = []
    for index in range(8):
        _, stems = whole[index]
        places = [locate(stems[k].numpy(), tracks, stem) for k, stem in enumerate(STEMS)]
        assert all(len(p) == 1 for p in places), places
        assert len({p[0] for p in places}) == 1  # one track, one offset, no swap
        _, stems = mixed[index]
        places = [locate(stems[k].numpy(), tracks, stem) for k, stem in enumerate(STEMS)]
        assert all(len(p) == 1 and not p[0][2] for p in places), places
        sources_per_item.append({p[0][0] for p in places})
    # Stems remixed across tracks: most items combine stems of several songs.
    assert sum(len(s) > 1 for s in sources_per_item) >= 6


def test_gain_and_swap_apply_to_the_same_segments(tiny):
    tracks = find_tracks(tiny, "train")
    plain = SegmentDataset(tracks, 0.25, samples_per_epoch=10, gain=None, channel_swap=False)
    augmented = SegmentDataset(tracks, 0.25, samples_per_epoch=10, gain=(0.5, 1.0),
                               channel_swap=True)
    swaps = 0
    for (_, a), (_, b) in zip(plain, augmented):
        for k in range(4):
            fits = []
            for swapped, ref in ((False, a[k]), (True, a[k].flip(0))):
                gain = float((b[k] * ref).sum() / (ref * ref).sum())
                fits.append((float((b[k] - gain * ref).abs().max()), gain, swapped))
            error, gain, swapped = min(fits)
            assert error < 1e-6 and 0.5 <= gain < 1.0
            swaps += swapped
    assert 10 <= swaps <= 30  # about half of the 40 stems


def test_targets_subset_keeps_the_full_mixture(tiny):
    tracks = find_tracks(tiny, "train")
    pair = SegmentDataset(tracks, 0.25, targets=("vocals", "accompaniment"), samples_per_epoch=4)
    solo = SegmentDataset(tracks, 0.25, targets="vocals", samples_per_epoch=4)
    for (mix_a, tgt_a), (mix_b, tgt_b) in zip(pair, solo):
        assert tgt_b.shape == (1, 2, 2000)
        torch.testing.assert_close(tgt_b[0], tgt_a[0], atol=0, rtol=0)
        torch.testing.assert_close(mix_b, mix_a, atol=1e-6, rtol=0)
    mixture, target = SegmentDataset(tracks, 0.25, targets="mixture", samples_per_epoch=1)[0]
    torch.testing.assert_close(target[0], mixture, atol=1e-6, rtol=0)


def test_mono_is_the_channel_mean(tiny):
    tracks = find_tracks(tiny, "train")
    stereo = SegmentDataset(tracks, 0.25, samples_per_epoch=5)
    mono = SegmentDataset(tracks, 0.25, samples_per_epoch=5, mono=True)
    for (mix_s, tgt_s), (mix_m, tgt_m) in zip(stereo, mono):
        assert mix_m.shape == (1, 2000) and tgt_m.shape == (4, 1, 2000)
        torch.testing.assert_close(tgt_m, tgt_s.mean(1, keepdim=True), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(tgt_m.sum(0), mix_m, atol=1e-6, rtol=0)


SINES = {"vocals": 440.0, "drums": 1000.0, "bass": 110.0, "other": 2500.0}


def test_resampling_keeps_known_sines(tmp_path):
    folder = tmp_path / "test" / "Sine - Song"
    folder.mkdir(parents=True)
    t = np.arange(2 * SR) / SR
    for stem, freq in SINES.items():
        audio = 0.2 * np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
        sf.write(folder / f"{stem}.wav", audio, SR, subtype="FLOAT")
    tracks = find_tracks(tmp_path, "test")
    up = FixedSegments(tracks, 0.5, sample_rate=16000)
    assert up.sample_rate == 16000 and len(up) == 4
    _, start = up.segments[1]
    mixture, targets = up[1]
    assert targets.shape == (4, 2, 8000) and mixture.shape == (2, 8000)
    time = start / SR + np.arange(8000) / 16000
    middle = slice(400, 7600)  # the chunk's edges depend on the resampler's boundary handling
    for k, stem in enumerate(STEMS):
        phase = 2 * np.pi * SINES[stem] * time
        expected = 0.2 * np.stack([np.sin(phase), np.cos(phase)])
        np.testing.assert_allclose(targets[k].numpy()[:, middle], expected[:, middle], atol=2e-3)
    # Down to 4 kHz: the 2.5 kHz "other" sine lies above the new Nyquist frequency and vanishes.
    _, down, down_targets = FullTracks(tracks, sample_rate=4000)[0]
    assert down.shape == (2, 8000) and down_targets.shape == (4, 2, 8000)
    assert down_targets[3, :, 400:-400].abs().max() < 0.01
    assert down_targets[0, :, 400:-400].abs().max() > 0.19
    mixture, targets = SegmentDataset(tracks, 0.5, samples_per_epoch=3, sample_rate=11025)[0]
    assert targets.shape == (4, 2, 5512)
    torch.testing.assert_close(targets.sum(0), mixture, atol=1e-6, rtol=0)


def test_determinism_across_instances_and_epochs(tiny):
    tracks = find_tracks(tiny, "train")
    first = SegmentDataset(tracks, 0.25, samples_per_epoch=4, seed=7)
    second = SegmentDataset(tracks, 0.25, samples_per_epoch=4, seed=7)
    epoch0 = [first[i] for i in range(4)]
    for i in (3, 0, 2, 1):  # order does not matter
        torch.testing.assert_close(second[i], epoch0[i], atol=0, rtol=0)
    first.set_epoch(1)
    epoch1 = [first[i] for i in range(4)]
    assert all(not torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch1))
    second.set_epoch(1)
    torch.testing.assert_close(second[2], epoch1[2], atol=0, rtol=0)
    first.set_epoch(0)
    torch.testing.assert_close(first[1], epoch0[1], atol=0, rtol=0)
    other_seed = SegmentDataset(tracks, 0.25, samples_per_epoch=4, seed=8)
    assert not torch.equal(other_seed[0][0], epoch0[0][0])
    with pytest.raises(IndexError):
        first[4]


def test_dataloader_workers_give_the_same_batches(tiny):
    data = SegmentDataset(find_tracks(tiny, "train"), 0.25, samples_per_epoch=8, seed=3)
    data.set_epoch(2)
    serial = list(DataLoader(data, batch_size=4, num_workers=0))
    parallel = list(DataLoader(data, batch_size=4, num_workers=2))
    assert len(serial) == len(parallel) == 2
    for (mix_a, tgt_a), (mix_b, tgt_b) in zip(serial, parallel):
        assert mix_a.shape == (4, 2, 2000) and tgt_a.shape == (4, 4, 2, 2000)
        assert torch.equal(mix_a, mix_b) and torch.equal(tgt_a, tgt_b)


def test_short_tracks_are_zero_padded(tmp_path):
    write_track(tmp_path / "train" / "Short - One", 0.1, 0)
    tracks = find_tracks(tmp_path, "train+valid")
    mixture, targets = SegmentDataset(tracks, 0.25, samples_per_epoch=1)[0]
    assert mixture.shape == (2, 2000)
    assert mixture[:, :800].abs().max() > 0.05
    assert not targets[..., 800:].any()
    fixed = FixedSegments(tracks, 0.25)
    assert fixed.segments == [(0, 0)] and not fixed[0][1][..., 800:].any()


def test_dataset_argument_errors(tiny):
    tracks = find_tracks(tiny, "train")
    with pytest.raises(DataError, match="No tracks given"):
        SegmentDataset([])
    with pytest.raises(DataError, match="Unknown target 'guitar'"):
        SegmentDataset(tracks, targets=("vocals", "guitar"))
    with pytest.raises(DataError, match="shorter than one sample"):
        SegmentDataset(tracks, segment_seconds=0.0)
    with pytest.raises(DataError, match=r"gain=\(1.5, 0.5\) must be"):
        SegmentDataset(tracks, gain=(1.5, 0.5))


def test_silent_segments_are_redrawn(tmp_path):
    write_track(tmp_path / "train" / "Loud - Song", 1.0, 0)
    quiet = tmp_path / "train" / "Quiet - Song"
    write_track(quiet, 1.0, 1)
    sf.write(quiet / "vocals.wav", np.zeros((SR, 2)), SR, subtype="PCM_16")
    tracks = find_tracks(tmp_path, "train+valid")
    kwargs = {"segment_seconds": 0.25, "samples_per_epoch": 20, "gain": None,
              "random_mix": True}
    loose = SegmentDataset(tracks, **kwargs)
    strict = SegmentDataset(tracks, silent_threshold_db=-60.0, **kwargs)
    assert any(not loose[i][1][0].any() for i in range(20))  # silent vocals happen...
    assert all(strict[i][1][0].abs().max() > 0.05 for i in range(20))  # ...unless redrawn


# ------------------------------------------------------------------------------------------
# FixedSegments and FullTracks
# ------------------------------------------------------------------------------------------

def test_fixed_segments_cover_the_tracks(tiny):
    tracks = find_tracks(tiny, "test")
    data = FixedSegments(tracks, segment_seconds=0.5, hop_seconds=0.25)
    expected = sum((t.num_frames - 4000) // 2000 + 1 for t in tracks)
    assert len(data) == expected == 9 + 11
    assert data.segments[:3] == [(0, 0), (0, 2000), (0, 4000)]
    for index in (0, 5, len(data) - 1):
        track_index, start = data.segments[index]
        mixture, targets = data[index]
        reference = tracks[track_index].load(STEMS, start / SR, 0.5)
        assert torch.equal(targets, torch.from_numpy(reference))
        torch.testing.assert_close(targets.sum(0), mixture, atol=1e-6, rtol=0)
        assert torch.equal(data[index][0], mixture)  # fixed: the same every time
    spread = FixedSegments(tracks, 0.5, hop_seconds=0.25, max_per_track=3)
    assert spread.segments == [(0, 0), (0, 8000), (0, 16000), (1, 0), (1, 10000), (1, 20000)]
    assert len(FixedSegments(tracks, 0.5)) == 5 + 6  # back to back, tails dropped


def test_full_tracks(tiny):
    tracks = find_tracks(tiny, "test")
    data = FullTracks(tracks, targets=("vocals", "accompaniment"))
    items = list(data)
    assert len(items) == len(data) == 2
    name, mixture, targets = items[1]
    assert name == "Zed - Beta" and mixture.shape == (2, 24000) and targets.shape == (2, 2, 24000)
    torch.testing.assert_close(targets, torch.from_numpy(tracks[1].load(("vocals",
                                                                         "accompaniment"))))
    torch.testing.assert_close(targets.sum(0), mixture, atol=1e-6, rtol=0)
    _, stored, _ = FullTracks(tracks, mixture="file")[1]
    assert torch.equal(stored, torch.from_numpy(tracks[1].load_mixture()))
    _, mono, mono_targets = FullTracks(tracks, mono=True, sample_rate=4000)[0]
    assert mono.shape == (1, 10000) and mono_targets.shape == (4, 1, 10000)


# ------------------------------------------------------------------------------------------
# musdb and the built-in set
# ------------------------------------------------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="musdb needs the ffmpeg and ffprobe binaries")


@needs_ffmpeg
@pytest.mark.ffmpeg
def test_musdb_reads_the_same_audio(tiny):
    import musdb

    db = musdb.DB(root=str(tiny), is_wav=True, subsets="test")
    ours = find_tracks(tiny, "test")
    assert [t.name for t in db.tracks] == [t.name for t in ours]
    for theirs, track in zip(db.tracks, ours):
        assert theirs.rate == track.sample_rate and theirs.samples == track.num_frames
        audio = track.load(("vocals", "drums", "accompaniment", "mixture"))
        np.testing.assert_array_equal(theirs.targets["vocals"].audio.T, audio[0])
        np.testing.assert_array_equal(theirs.sources["drums"].audio.T, audio[1])
        np.testing.assert_allclose(theirs.targets["accompaniment"].audio.T, audio[2], atol=1e-6)
        np.testing.assert_array_equal(theirs.audio.T, audio[3])
        theirs.chunk_start, theirs.chunk_duration = 0.5, 1.0
        np.testing.assert_array_equal(theirs.targets["bass"].audio.T,
                                      track.load("bass", 0.5, 1.0)[0])


@needs_ffmpeg
@pytest.mark.ffmpeg
def test_stem_mp4_tracks_go_through_musdb(tmp_path):
    import stempeg
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    sr = 22050
    # Low-passed noise survives AAC well enough to compare with the source.
    stems = lfilter([1.0], [1.0, -0.95], rng.uniform(-0.05, 0.05, (4, 2 * sr, 2)), axis=1)
    order = [STEMS.index(s) for s in ("drums", "bass", "other", "vocals")]
    streams = np.concatenate([stems.sum(0, keepdims=True), stems[order]]).astype(np.float32)
    (tmp_path / "test").mkdir()
    stempeg.write_stems(str(tmp_path / "test" / "Stem - Song.stem.mp4"), streams,
                        sample_rate=sr, writer=stempeg.StreamsWriter(codec="aac"))
    track = find_tracks(tmp_path, "test")[0]
    assert (track.name, track.kind, track.sample_rate, track.num_channels) == (
        "Stem - Song", "stem", sr, 2)
    audio = pickle.loads(pickle.dumps(track)).load(STEMS, start=0.5, duration=1.0)
    assert audio.shape == (4, 2, sr)
    for k in range(4):
        reference = stems[k, sr // 2: sr // 2 + sr].T
        assert np.corrcoef(audio[k].ravel(), reference.ravel())[0, 1] > 0.9
    mixture, targets = SegmentDataset([track], 0.25, samples_per_epoch=1)[0]
    torch.testing.assert_close(targets.sum(0), mixture, atol=1e-6, rtol=0)


def test_builtin_set_through_the_same_interface(tmp_path):
    toy = pytest.importorskip("labkit.data.toy")
    root = toy.generate(root=tmp_path / "toy", n_train=3, n_test=1, seconds=1.0,
                        sample_rate=8000, stereo=False, seed=0, workers=1, progress=False)
    test = find_tracks(root, "test")
    assert len(test) == 1 and test[0].num_channels == 1 and test[0].sample_rate == 8000
    train = find_tracks(root, "train+valid")
    assert len(train) == 3
    manifest = json.loads((root / "manifest.json").read_text())
    assert [t.name for t in find_tracks(root, "valid")] == manifest["valid"]
    mixture, targets = SegmentDataset(train, 0.5, samples_per_epoch=2)[1]
    assert mixture.shape == (1, 4000) and targets.shape == (4, 1, 4000)
    torch.testing.assert_close(targets.sum(0), mixture, atol=1e-6, rtol=0)
    stored = test[0].load_mixture()
    summed = test[0].load(STEMS).sum(0)
    assert stored.shape == summed.shape == (1, 8000)
    np.testing.assert_allclose(stored, summed, atol=1e-3)  # the toy mixture is the stems' sum
