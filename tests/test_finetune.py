"""Single-song fine-tuning: stems alignment, the leakage-free time split, augmentation, the loop."""
import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from labkit import finetune as ft
from labkit.errors import AudioError, LabkitError
from labkit.models.spec_unet import SpecUNet, SpecUNetSeparator

SR = 8000


def tiny_separator(channels=1, sample_rate=SR):
    """A small spectrogram U-Net separator (2 levels, 4 channels) that runs in milliseconds."""
    torch.manual_seed(0)
    unet = SpecUNet(levels=2, base_channels=4, kernel_size=3, norm="batch", log_input=True)
    return SpecUNetSeparator.from_unet(unet, sample_rate=sample_rate, n_fft=256, hop_length=64,
                                       channels=channels, chunk_frames=32)


def stems_of(seconds=4.0, sr=SR, channels=2, seed=0):
    """Four stems (channels, samples): a vibrato 'voice', clicks, a low tone and noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    voice = 0.3 * np.sin(2 * np.pi * (440 * t + 3 * np.sin(2 * np.pi * 5 * t)))
    drums = np.zeros(n)
    drums[:: sr // 4] = 0.8
    bass = 0.3 * np.sin(2 * np.pi * 70 * t)
    other = 0.05 * rng.standard_normal(n)
    out = {}
    for name, x in zip(("vocals", "drums", "bass", "other"), (voice, drums, bass, other)):
        out[name] = np.stack([x * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)
    return out


def write(path, audio, sr):
    sf.write(str(path), np.asarray(audio).T, sr, subtype="FLOAT")
    return path


# ----------------------------------------------------------------------------- stems alignment
def test_align_stem_resamples_converts_channels_and_trims_within_tolerance():
    mixture = np.zeros((2, SR * 2), np.float32)
    stem = np.sin(np.arange(SR) / 10.0).astype(np.float32)[None]  # mono, 1 s at SR / 2
    aligned, notes = ft.align_stem(stem, SR // 2, mixture, SR, "vocals")
    assert aligned.shape == (2, 2 * SR)
    np.testing.assert_array_equal(aligned[0], aligned[1])
    assert any("resampled from 4000 Hz" in n for n in notes)
    assert any("2 channel" in n for n in notes)

    longer = np.ones((2, 2 * SR + 40), np.float32)  # 5 ms too long: trimmed
    aligned, notes = ft.align_stem(longer, SR, mixture, SR, "drums")
    assert aligned.shape == mixture.shape and notes == [
        "drums: trimmed by 40 samples (5.0 ms) to the mixture's length"]
    shorter = np.ones((2, 2 * SR - 80), np.float32)
    aligned, notes = ft.align_stem(shorter, SR, mixture, SR, "bass")
    assert aligned.shape == mixture.shape and np.all(aligned[:, -80:] == 0)
    assert "zero-padded by 80 samples" in notes[0]


def test_align_stem_rejects_a_length_difference_beyond_the_tolerance():
    mixture = np.zeros((1, 10 * SR), np.float32)
    with pytest.raises(ft.StemAlignmentError, match=r"vocals.wav.*lasts 9\.000 s but the "
                       r"mixture 10\.000 s.*1\.000 s apart.*tolerance of 0\.1 s"):
        ft.align_stem(np.zeros((1, 9 * SR), np.float32), SR, mixture, SR, "vocals.wav")
    with pytest.raises(ft.StemAlignmentError, match="3 channels and the mixture 2"):
        ft.align_stem(np.zeros((3, SR), np.float32), SR, np.zeros((2, SR), np.float32), SR,
                      "other")


def test_load_song_from_files_aligns_stems_of_another_rate(tmp_path):
    stems = stems_of(seconds=2.0)
    mixture = sum(stems.values())
    write(tmp_path / "my song.wav", mixture, SR)
    write(tmp_path / "v.wav", stems["vocals"][:, ::2], SR // 2)  # half the rate, same duration
    song = ft.load_song(tmp_path / "my song.wav", {"vocals": tmp_path / "v.wav"})
    assert song.name == "my song" and song.sr == SR and song.stem_set == "vocals"
    assert song.stems["vocals"].shape == mixture.shape
    assert any("resampled from 4000 Hz to the mixture's 8000 Hz" in n for n in song.notes)


def test_vocals_only_gives_the_accompaniment_as_the_rest_of_the_mixture():
    stems = stems_of()
    mixture = sum(stems.values())
    song = ft.load_song(mixture, {"vocals": stems["vocals"]}, sr=SR)
    targets = song.targets(("vocals", "accompaniment"))
    np.testing.assert_allclose(targets[1], mixture - stems["vocals"], atol=1e-7)
    four = ft.load_song(mixture, stems, sr=SR)
    np.testing.assert_allclose(four.targets(["accompaniment"])[0],
                               stems["drums"] + stems["bass"] + stems["other"], atol=1e-6)
    with pytest.raises(ft.StemAlignmentError, match="'drums' cannot be made"):
        song.targets(["drums"])


def test_stem_sets_other_than_the_three_are_rejected_by_name():
    stems = stems_of()
    mixture = sum(stems.values())
    with pytest.raises(ft.StemAlignmentError, match="stems drums, bass are not a set"):
        ft.load_song(mixture, {"drums": stems["drums"], "bass": stems["bass"]}, sr=SR)
    with pytest.raises(ft.StemAlignmentError, match="not a set"):
        ft.load_song(mixture, {"vocals": stems["vocals"], "piano": stems["other"]}, sr=SR)
    with pytest.raises(AudioError, match="give its sample rate"):
        ft.load_song(mixture)


def test_stems_that_do_not_add_up_to_the_mixture_are_reported():
    stems = stems_of()
    mixture = sum(stems.values())
    with pytest.warns(UserWarning, match="add up to the mixture only within"):
        ft.load_song(mixture, {"vocals": stems["vocals"],
                               "accompaniment": 0.5 * (mixture - stems["vocals"])}, sr=SR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ft.load_song(mixture, stems, sr=SR)  # exact stems: no warning


# ----------------------------------------------------------------------------- time split
def test_time_split_known_answer_and_errors():
    split = ft.time_split(1000, 100, train_fraction=0.7, guard_samples=50)
    assert (split.train, split.test, split.guard) == ((0, 650), (700, 1000), 50)
    assert split.describe() == "train 0.00-6.50 s, guard 6.50-7.00 s, held out 7.00-10.00 s"
    with pytest.raises(LabkitError, match="train_fraction=1.2"):
        ft.time_split(1000, 100, 1.2)
    with pytest.raises(LabkitError, match="leaves 0.00 s to train on"):
        ft.time_split(1000, 100, 0.7, guard_samples=700)


@pytest.mark.parametrize("seed", range(5))
def test_split_at_another_rate_never_creates_an_overlap(seed):
    rng = np.random.default_rng(seed)
    samples = int(rng.integers(5000, 50000))
    split = ft.time_split(samples, 44100, float(rng.uniform(0.3, 0.8)),
                          int(rng.integers(0, 200)), min_seconds=0.01)
    for rate in (8000, 22050, 48000):
        other = split.at(rate)
        assert other.train_stop / rate <= split.train_stop / 44100
        assert other.test_start / rate >= split.test_start / 44100
        assert other.train_stop <= other.test_start <= other.samples


def test_evaluating_on_trained_audio_is_refused_unless_asked():
    assert ft.check_no_leakage((700, 1000), [(0, 650)], guard=50) is False
    with pytest.raises(ft.LeakageError, match="would use audio trained on"):
        ft.check_no_leakage((600, 1000), [(0, 650)])
    with pytest.raises(ft.LeakageError):  # outside the trained audio but inside its guard band
        ft.check_no_leakage((660, 1000), [(0, 650)], guard=50)
    with pytest.warns(UserWarning, match="allow_overlap=True"):
        assert ft.check_no_leakage((0, 1000), [(0, 650)], allow_overlap=True) is True


def test_evaluate_holdout_refuses_the_training_part_and_scores_the_held_out_part():
    stems = stems_of(seconds=4.0, channels=1)
    song = ft.load_song(sum(stems.values()), {"vocals": stems["vocals"]}, sr=SR)
    model = tiny_separator()
    split = ft.time_split(song.samples, SR, 0.6, guard_samples=400)
    with pytest.raises(ft.LeakageError, match="memorisation"):
        ft.evaluate_holdout(model, song, split, region=(0, song.samples))
    with pytest.warns(UserWarning):
        forced = ft.evaluate_holdout(model, song, split, region=(0, 2 * SR), allow_overlap=True)
    assert forced["overlap"] is True
    result = ft.evaluate_holdout(model, song, split, oracle=True)
    assert result["region"] == split.test and result["overlap"] is False
    assert set(result["sdr"]) == {"vocals", "accompaniment"}
    assert result["oracle_sdr"]["vocals"] > result["sdr"]["vocals"]


# ----------------------------------------------------------------------------- receptive field
class Convs(torch.nn.Module):
    """A separator of ``depth`` 'same' convolutions of kernel 9: receptive field 4 * depth."""

    sources = ("a", "b")

    def __init__(self, depth):
        super().__init__()
        self.sample_rate, self.channels, self.chunk_seconds = SR, 1, 0.5
        self.layers = torch.nn.Sequential(*[torch.nn.Conv1d(1 if i == 0 else 2, 2, 9, padding=4)
                                            for i in range(depth)])

    def forward(self, x):
        return self.layers(x).unsqueeze(2)


class GlobalMean(Convs):
    def forward(self, x):
        return (x - x.mean(dim=-1, keepdim=True)).unsqueeze(1).expand(-1, 2, -1, -1)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_receptive_field_of_stacked_convolutions(depth):
    assert ft.receptive_field(Convs(depth)) == 4 * depth


def test_a_model_that_sees_everything_gets_its_whole_chunk():
    assert ft.receptive_field(GlobalMean(1)) == round(0.5 * SR)



def test_a_spectrogram_model_sees_more_than_its_stft_frame_and_less_than_its_chunk():
    model = tiny_separator()  # 2 levels of 3x3 convolutions over frames 64 samples apart
    field = ft.receptive_field(model)
    assert 256 < field < round(model.chunk_seconds * SR) // 2


# ----------------------------------------------------------------------------- augmentation
def test_random_crop_is_an_excerpt_and_pads_short_audio():
    audio = np.arange(20, dtype=np.float32)[None].repeat(2, 0)
    piece = ft.random_crop(audio, np.random.default_rng(3), 5)
    start = int(piece[0, 0])
    np.testing.assert_array_equal(piece, audio[:, start:start + 5])
    starts = {int(ft.random_crop(audio, np.random.default_rng(s), 5)[0, 0]) for s in range(200)}
    assert starts == set(range(16))  # every start from 0 to 20 - 5
    short = ft.random_crop(audio[:, :3], np.random.default_rng(0), 5)
    np.testing.assert_array_equal(short[0], [0, 1, 2, 0, 0])


def test_random_gain_and_swap_channels():
    audio = np.ones((2, 10), np.float32)
    gains = [float(ft.random_gain(audio, np.random.default_rng(s), -6, 3)[0, 0])
             for s in range(100)]
    assert 10 ** (-6 / 20) <= min(gains) and max(gains) < 10 ** (3 / 20)
    stereo = np.stack([np.zeros(4), np.ones(4)]).astype(np.float32)
    np.testing.assert_array_equal(ft.swap_channels(stereo, np.random.default_rng(0), p=1.0),
                                  stereo[::-1])
    np.testing.assert_array_equal(ft.swap_channels(stereo, np.random.default_rng(0), p=0.0),
                                  stereo)
    mono = np.ones((1, 4), np.float32)
    assert ft.swap_channels(mono, np.random.default_rng(0), p=1.0) is mono


def test_random_remix_cuts_each_stem_at_its_own_offset():
    n, length = 400, 50
    ramps = np.stack([np.arange(n) + 1.0] * 4)[:, None].astype(np.float32)
    offsets = []
    for seed in range(20):
        out = ft.random_remix(ramps, np.random.default_rng(seed), length, -6.0, 3.0)
        assert out.shape == (4, 1, length)
        row = []
        for k in range(4):
            gain = out[k, 0, 1] - out[k, 0, 0]  # a ramp's slope is its gain
            assert 10 ** (-6 / 20) - 1e-4 <= gain < 10 ** (3 / 20) + 1e-4
            start = out[k, 0, 0] / gain - 1.0
            assert abs(start - round(start)) < 1e-2
            np.testing.assert_allclose(out[k, 0], gain * ramps[k, 0, round(start):
                                                               round(start) + length], rtol=1e-4)
            row.append(round(start))
        offsets.append(row)
    assert sum(len(set(r)) > 1 for r in offsets) >= 18  # offsets are independent per stem


def test_song_segments_are_deterministic_and_sum_to_the_mixture():
    stems = np.random.default_rng(0).standard_normal((2, 2, 1000)).astype(np.float32)
    data = ft.SongSegments(stems, length=100, items=8, seed=1)
    mixture, targets = data[3]
    assert mixture.shape == (2, 100) and targets.shape == (2, 2, 100)
    torch.testing.assert_close(mixture, targets.sum(0))
    torch.testing.assert_close(data[3][1], targets)
    data.set_epoch(1)
    assert not torch.equal(data[3][1], targets)
    plain = ft.SongSegments(stems, length=100, items=8, augmentation=ft.Augmentation.none())
    _, excerpt = plain[0]
    start = int(np.flatnonzero(np.isclose(stems[0, 0], excerpt[0, 0, 0].item()))[0])
    np.testing.assert_array_equal(excerpt.numpy(), stems[..., start:start + 100])


# ----------------------------------------------------------------------------- model plumbing
def test_target_groups():
    four = ("vocals", "drums", "bass", "other")
    assert ft.target_groups(four, ("vocals", "accompaniment")) == [[0], [1, 2, 3]]
    assert ft.target_groups(four, four) == [[0], [1], [2], [3]]
    assert ft.target_groups(("vocals", "accompaniment"), ("vocals", "accompaniment")) == [[0], [1]]
    with pytest.raises(LabkitError, match="no output for the target 'drums'"):
        ft.target_groups(("vocals", "accompaniment"), ("drums",))


def test_freeze_encoder_freezes_exactly_the_encoder():
    model = tiny_separator()
    frozen = ft.freeze_encoder(model)
    assert frozen and all(name.startswith("unet.encoder.") for name in frozen)
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (not name.startswith("unet.encoder."))
    with pytest.raises(LabkitError, match="has no encoder to freeze"):
        ft.freeze_encoder(torch.nn.Linear(2, 2))


def _song(seconds=6.0, seed=0):
    stems = stems_of(seconds=seconds, channels=1, seed=seed)
    return ft.load_song(sum(stems.values()), {"vocals": stems["vocals"]}, sr=SR, name="tiny")


def test_finetune_with_a_frozen_encoder_changes_only_the_decoder(tmp_path):
    model = tiny_separator()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = ft.finetune(model, _song(), workdir=tmp_path / "run", epochs=2, steps_per_epoch=4,
                      lr=1e-2, batch_size=2, freeze=True, progress=False)
    after = run.model.state_dict()
    assert run.steps == 8 and run.stopped_by == "epochs"
    for key, value in before.items():
        same = torch.equal(value, after[key])
        if key.startswith("unet.encoder."):
            assert same, f"{key} changed although the encoder is frozen"  # incl. BN statistics
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("unet.last"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy trained
    assert (tmp_path / "run" / "final.pt").is_file()
    assert run.split.guard == ft.receptive_field(model)


def test_finetune_lowers_the_loss_on_the_song(tmp_path):
    run = ft.finetune(tiny_separator(), _song(), workdir=tmp_path / "run", epochs=1,
                      steps_per_epoch=30, lr=1e-2, batch_size=4, progress=False)
    losses = run.history["train_loss"]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])


def test_finetune_refuses_a_song_without_stems(tmp_path):
    song = ft.load_song(np.zeros((1, 4 * SR), np.float32) + 0.1, sr=SR)
    with pytest.raises(LabkitError, match="no stems: there is nothing to fine-tune on"):
        ft.finetune(tiny_separator(), song, workdir=tmp_path / "run")


# ----------------------------------------------------------------------------- whole song
@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A models folder with one tiny 'shipped' vocals model, the default for every task."""
    from labkit.pretrained import export_pretrained

    folder = tmp_path / "models"
    export_pretrained(tiny_separator(), "tiny-vocals", folder=folder,
                      train_command="labkit train pretrained tiny-vocals",
                      defaults=("separate", "vocals", "stems"))
    monkeypatch.setenv("LABKIT_MODELS", str(folder))
    return folder


def test_without_stems_it_says_so_and_separates_with_the_shipped_model(shipped, tmp_path):
    stems = stems_of(seconds=3.0, channels=2)
    path = write(tmp_path / "song.wav", sum(stems.values()), SR)
    with pytest.warns(ft.NothingToFineTuneWarning, match="nothing to fine-tune on; separating "
                      "it with the shipped model 'tiny-vocals'"):
        result = ft.finetune_song(path, progress=False)
    assert result.finetuned is False and result.run is None
    assert set(result.outputs) == {"vocals", "accompaniment"}
    for stem, out in result.outputs.items():
        assert out == tmp_path / "song_separated" / f"song_{stem}.wav"
        data, rate = sf.read(out, always_2d=True)
        assert rate == SR and data.shape == (3 * SR, 2)


def test_finetune_song_trains_scores_and_separates_the_whole_song(shipped, tmp_path):
    stems = stems_of(seconds=6.0, channels=2)
    (tmp_path / "in").mkdir()
    mixture_path = write(tmp_path / "in" / "take.wav", sum(stems.values()), SR)
    vocals_path = write(tmp_path / "in" / "v.wav", stems["vocals"], SR)
    result = ft.finetune_song(mixture_path, {"vocals": vocals_path}, out_dir=tmp_path / "out",
                              checkpoints=tmp_path / "ckpt", epochs=1, steps_per_epoch=3,
                              batch_size=2, progress=False)
    assert result.finetuned and result.run.steps == 3
    song_folder = tmp_path / "ckpt" / f"single_audio_{ft.song_id(result.song.mixture, SR)}"
    assert (song_folder / "final.pt").is_file()
    manifest = json.loads((song_folder / "manifest.json").read_text())
    assert manifest["trainer"]["lr"] == 1e-4  # the default
    assert set(result.scores) == {"before", "after", "oracle"}
    assert all(np.isfinite(v["vocals"]) for v in result.scores.values())
    assert sorted(p.name for p in (tmp_path / "out" / "take_separated").iterdir()) == [
        "take_accompaniment.wav", "take_vocals.wav"]


# ----------------------------------------------------------------------------- command line
def test_cli_without_stems_says_so_and_separates(shipped, tmp_path, capsys):
    from labkit import cli

    path = write(tmp_path / "tune.wav", sum(stems_of(seconds=2.0).values()), SR)
    assert cli.main(["finetune", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no stems given, so there is nothing to fine-tune on" in out
    assert "tiny-vocals" in out
    assert sorted(p.name for p in (tmp_path / "out" / "tune_separated").iterdir()) == [
        "tune_accompaniment.wav", "tune_vocals.wav"]


@pytest.mark.parametrize("extra, message", [
    (["--drums", "{v}"], "give --vocals"),
    (["--vocals", "{v}", "--accompaniment", "{v}", "--bass", "{v}"], "not both"),
    (["--vocals", "{v}", "--drums", "{v}"], "missing --bass, --other"),
    (["--vocals", "{short}"], "lasts 1.000 s but the mixture 2.000 s"),
])
def test_cli_rejects_unusable_stems_with_a_clear_message(shipped, tmp_path, capsys, extra,
                                                         message):
    from labkit import cli

    stems = stems_of(seconds=2.0)
    song = write(tmp_path / "tune.wav", sum(stems.values()), SR)
    files = {"v": write(tmp_path / "v.wav", stems["vocals"], SR),
             "short": write(tmp_path / "short.wav", stems["vocals"][:, :SR], SR)}
    args = ["finetune", str(song), *[a.format(**files) for a in extra], "--no-progress"]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tune_separated").exists()
