"""Notebook 02's task glue (labkit.vocals): patches, training on the shared Trainer, the collapse
trace, evaluation beside the oracle, and the `labkit train specunet` command."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from labkit import signals
from labkit.audio import resample
from labkit.errors import DataError, LabkitError
from labkit.models.spec_unet import SpecUNet, SpecUNetSeparator, masked_l1_loss
from labkit.spectral import stft
from labkit.vocals import (
    SOURCES,
    BudgetStop,
    VocalPatches,
    cli_main,
    evaluate_vocals,
    evaluation_tracks,
    load_stems,
    mean_mask_trace,
    spec_unet_step,
    train_spec_unet,
    vocals_report,
)

SR = 22050
TINY = {"levels": 2, "base_channels": 2, "kernel_size": 3, "norm": "batch", "log_input": True}


def song(seconds=2.0, seed=0):
    """(vocals, accompaniment) mono at 22.05 kHz: a vowel-like line over a music-like bed."""
    vocals = signals.speech_like(seconds, sr=SR, seed=seed)[0]
    accompaniment = 0.5 * signals.music_like(seconds, sr=SR, seed=seed + 10)[0]
    return np.stack([vocals, accompaniment]).astype(np.float32)


@pytest.fixture(scope="module")
def songs():
    return [song(2.0, seed) for seed in range(3)]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    """A MUSDB18-HQ-shaped folder at 44.1 kHz stereo: 3 train songs, 1 test song of 1.5 s."""
    root = tmp_path_factory.mktemp("tiny-musdb")
    for split, names in (("train", ["a", "b", "c"]), ("test", ["t"])):
        for k, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            seed = 3 * k + (100 if split == "test" else 0)
            stems = {"vocals": signals.speech_like(1.5, sr=44100, seed=seed, channels=2),
                     "drums": 0.3 * signals.music_like(1.5, sr=44100, seed=seed + 1, channels=2),
                     "bass": 0.2 * signals.music_like(1.5, sr=44100, seed=seed + 2, channels=2),
                     "other": 0.2 * signals.music_like(1.5, sr=44100, seed=seed + 3, channels=2)}
            for stem, audio in stems.items():
                sf.write(folder / f"{stem}.wav", audio.T, 44100, subtype="FLOAT")
    return root


# ----------------------------------------------------------------------------------- data
def test_load_stems_resamples_to_mono_vocals_and_accompaniment(dataset_root):
    from labkit.data import find_tracks

    tracks = find_tracks(dataset_root, split="train+valid")
    loaded = load_stems(tracks)
    assert len(loaded) == 3
    assert all(s.shape == (2, round(1.5 * SR)) and s.dtype == np.float32 for s in loaded)
    vocals, _ = sf.read(dataset_root / "train" / "a" / "vocals.wav", dtype="float32")
    expected = resample(vocals.T.mean(0), 44100, SR)
    np.testing.assert_allclose(loaded[0][0], expected[:loaded[0].shape[-1]], atol=1e-5)
    stems = [sf.read(dataset_root / "train" / "a" / f"{s}.wav", dtype="float32")[0].T.mean(0)
             for s in ("drums", "bass", "other")]
    np.testing.assert_allclose(loaded[0][1], resample(sum(stems), 44100, SR)[:loaded[0].shape[-1]],
                               atol=1e-5)
    with pytest.raises(DataError, match="no tracks"):
        load_stems([])


def test_patches_are_stft_magnitudes_of_the_mixture_and_the_vocals(songs):
    patches = VocalPatches(songs, seed=3)
    mixture, vocals = patches[3]
    assert mixture.shape == vocals.shape == (1, 513, 128)
    mix_wave, voc_wave = patches.waveforms(3)
    assert mix_wave.shape == (127 * 256,)
    torch.testing.assert_close(mixture, stft(torch.from_numpy(mix_wave))[None].abs())
    torch.testing.assert_close(vocals, stft(torch.from_numpy(voc_wave))[None].abs())
    # one epoch covers the songs once: 3 songs of 44100 samples -> 4 segments of 32512
    assert len(patches) == (3 * 44100) // (127 * 256)


def test_patches_depend_only_on_seed_epoch_and_index(songs):
    a, b = VocalPatches(songs, seed=1), VocalPatches(songs, seed=1)
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0])
    first = a[0][0]
    a.set_epoch(1)
    assert not torch.equal(a[0][0], first)
    a.set_epoch(0)
    assert torch.equal(a[0][0], first)
    assert not torch.equal(VocalPatches(songs, seed=2)[0][0], first)


def test_patches_without_augmentation_are_excerpts_of_one_song(songs):
    patches = VocalPatches(songs, random_mix=False, gain=None, samples_per_epoch=6)
    for i in range(6):
        mixture, vocals = patches.waveforms(i)
        k = int(np.argmax(np.abs(vocals)))  # a loud sample pins down the offset
        hits = [(j, start) for j, s in enumerate(songs)
                for start in np.flatnonzero(s[0] == vocals[k]) - k
                if 0 <= start <= s.shape[-1] - len(vocals)
                and np.array_equal(s[0, start:start + len(vocals)], vocals)
                and np.allclose(s.sum(0)[start:start + len(vocals)], mixture, atol=1e-6)]
        assert hits, f"patch {i} is not an excerpt of one song"


def test_waveform_output_and_segment_length(songs):
    patches = VocalPatches(songs, output="waveform", segment_samples=4000, gain=(1.0, 1.0))
    mixture, vocals = patches[0]
    assert mixture.shape == vocals.shape == (1, 4000)
    mix_np, voc_np = patches.waveforms(0)
    np.testing.assert_array_equal(mixture[0].numpy(), mix_np)
    np.testing.assert_array_equal(vocals[0].numpy(), voc_np)


def test_patch_errors_are_named(songs):
    with pytest.raises(DataError, match=r"song 0 has shape \(4, 100\)"):
        VocalPatches([np.zeros((4, 100), np.float32)])
    with pytest.raises(DataError, match="output='mel'"):
        VocalPatches(songs, output="mel")
    with pytest.raises(DataError, match="gain="):
        VocalPatches(songs, gain=(1.0, 0.5))
    with pytest.raises(IndexError):
        VocalPatches(songs, samples_per_epoch=2)[2]


def test_a_short_song_is_zero_padded():
    short = song(0.5)
    mixture, vocals = VocalPatches([short], samples_per_epoch=1).waveforms(0)
    assert mixture.shape == (127 * 256,)
    assert np.all(vocals[short.shape[-1]:] == 0)


# ----------------------------------------------------------------------------------- training
def test_spec_unet_step_is_the_masked_l1_loss(songs):
    torch.manual_seed(0)
    model = SpecUNet(**TINY)
    batch = torch.utils.data.default_collate([VocalPatches(songs)[i] for i in range(2)])
    loss = spec_unet_step(model, batch, torch.device("cpu"))
    model.eval()  # batch norm: compare in one mode
    torch.testing.assert_close(spec_unet_step(model, batch, torch.device("cpu")),
                               masked_l1_loss(model(batch[0]), batch[0], batch[1]))
    assert loss.ndim == 0 and loss.requires_grad


def test_train_writes_checkpoints_history_and_returns_a_separator(songs, tmp_path):
    result = train_spec_unet(tmp_path / "run", model_config=TINY, train_songs=songs,
                             valid_songs=songs[:1], max_steps=4, batch_size=2, valid_patches=2,
                             val_every=2, ckpt_every=2, log_every=1, progress=False,
                             tensorboard=False, device="cpu")
    assert result.steps == 4 and result.stopped_by == "max_steps"
    for name in ("best.pt", "final.pt", "history.json", "manifest.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step_0000002.pt", "step_0000004.pt"]
    assert result.history["step"] == [1, 2, 3, 4]
    assert result.history["val_step"] == [2, 4]
    assert isinstance(result.separator, SpecUNetSeparator)
    assert result.separator.unet is result.model and not result.model.training
    out = result.separator(torch.from_numpy(songs[0].sum(0))[None, None])
    assert out.shape == (1, 2, 1, songs[0].shape[-1])
    # the returned weights are the best validation checkpoint's
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(value, best[key])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "spec_unet" and manifest["model"]["base_channels"] == 2


def test_train_stops_on_the_wall_clock_budget(songs, tmp_path):
    result = train_spec_unet(tmp_path / "run", model_config=TINY, train_songs=songs,
                             valid_songs=songs[:1], minutes=1e-6, max_steps=1000, batch_size=2,
                             valid_patches=2, log_every=2, progress=False, tensorboard=False,
                             device="cpu")
    assert result.stopped_by == "budget"
    assert result.steps == 2  # the first check of the clock comes with the first log entry
    assert result.steps_per_second > 0


def test_budget_on_the_process_clock(songs, tmp_path):
    result = train_spec_unet(tmp_path / "run", model_config=TINY, train_songs=songs,
                             valid_songs=songs[:1], minutes=1e-6, clock="process", batch_size=2,
                             valid_patches=2, log_every=2, progress=False, tensorboard=False,
                             device="cpu")
    assert (result.steps, result.stopped_by) == (2, "budget")
    stop = BudgetStop(3600.0, clock="process")
    spent = stop.spent(None)
    np.linalg.svd(np.random.default_rng(0).standard_normal((300, 300)))  # some CPU work
    assert stop.spent(None) > spent >= 0.0
    with pytest.raises(LabkitError, match="clock='gpu'"):
        BudgetStop(1.0, clock="gpu")


def test_anneal_lowers_the_rate_along_a_cosine_over_the_steps(songs, tmp_path):
    result = train_spec_unet(tmp_path / "run", model_config=TINY, train_songs=songs,
                             valid_songs=songs[:1], max_steps=4, batch_size=2, lr=2e-3,
                             anneal=True, min_lr_ratio=0.1, valid_patches=2, log_every=1,
                             progress=False, tensorboard=False, device="cpu")
    # the rate logged at step k was used for step k; it is lowered after every log
    expected = [2e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * k / 4))) for k in range(4)]
    assert result.history["lr"] == pytest.approx(expected)
    assert result.settings["anneal"] is True
    with pytest.raises(LabkitError, match="anneal=True needs minutes or max_steps"):
        train_spec_unet(tmp_path / "other", model_config=TINY, train_songs=songs,
                        valid_songs=songs[:1], epochs=1, anneal=True, progress=False)


def test_a_budget_run_resumed_stops_again_at_once_and_keeps_its_steps(songs, tmp_path):
    settings = {"model_config": TINY, "train_songs": songs, "valid_songs": songs[:1],
                "minutes": 1e-6, "batch_size": 2, "valid_patches": 2, "log_every": 2,
                "progress": False, "tensorboard": False, "device": "cpu"}
    first = train_spec_unet(tmp_path / "run", **settings)
    assert (first.steps, first.stopped_by) == (2, "budget")
    again = train_spec_unet(tmp_path / "run", resume="auto", **settings)
    # the clock already passed the budget: two more steps (one history entry), then the end
    assert (again.steps, again.stopped_by) == (4, "budget")
    assert again.history["step"] == [2, 4]
    assert torch.load(tmp_path / "run" / "final.pt", weights_only=True)["step"] == 4
    with pytest.raises(LabkitError, match="already holds a training run"):
        train_spec_unet(tmp_path / "run", **settings)


def test_train_needs_a_stopping_rule_and_enough_patches(songs, tmp_path):
    with pytest.raises(LabkitError, match="minutes, max_steps or epochs"):
        train_spec_unet(tmp_path / "a", train_songs=songs, valid_songs=songs)
    with pytest.raises(DataError, match="fewer patches than one batch"):
        train_spec_unet(tmp_path / "b", train_songs=songs, valid_songs=songs, max_steps=1,
                        batch_size=64, progress=False)


def test_mean_mask_trace_records_one_value_per_step(songs, tmp_path):
    torch.manual_seed(0)
    model = SpecUNet(**TINY)
    batches = [torch.utils.data.default_collate([VocalPatches(songs)[i] for i in range(2)])]
    with torch.no_grad():
        model.train()
        first = float(model(batches[0][0]).mean())
    trace = mean_mask_trace(model, batches, steps=3, workdir=tmp_path / "trace")
    assert len(trace) == 3
    assert (tmp_path / "trace" / "final.pt").is_file()
    assert len(mean_mask_trace(SpecUNet(**TINY), batches, steps=2)) == 2
    assert trace[0] == pytest.approx(first, rel=1e-5)
    assert all(0 < v < 1 for v in trace)


# ----------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def test_tracks(dataset_root):
    from labkit.data import find_tracks

    return evaluation_tracks(find_tracks(dataset_root, split="test"), seconds=1.0)


def test_evaluation_tracks_are_mono_22k_and_cropped(test_tracks):
    (name, mixture, targets), = test_tracks
    assert name == "t"
    assert mixture.shape == (1, SR) and targets.shape == (2, 1, SR)
    np.testing.assert_allclose(targets.sum(0), mixture, atol=1e-6)


def test_evaluate_vocals_ranks_oracle_model_and_floor(test_tracks):
    truth = {name: targets for name, _, targets in test_tracks}
    name = test_tracks[0][0]

    def perfect(mixture):
        return truth[name] + 1e-4 * np.random.default_rng(0).standard_normal(truth[name].shape)

    results = evaluate_vocals({"perfect": perfect, "half mask": SpecUNetSeparator.from_unet(
        SpecUNet(**TINY).eval())}, test_tracks, metrics=("sdr_fast", "si_sdr"), progress=False)
    assert set(results) == {"sdr_fast", "si_sdr"}
    for metric, by_method in results.items():
        assert list(by_method) == ["perfect", "half mask", "IRM2 oracle", "do-nothing"]
        assert by_method["IRM2 oracle"]["oracle"] and not by_method["perfect"]["oracle"]
        vocals = {m: r["median"]["vocals"] for m, r in by_method.items()}
        assert vocals["perfect"] > vocals["IRM2 oracle"] > vocals["do-nothing"], metric
    # do-nothing is the mixture: its SI-SDR for the vocals is known in closed form
    _, mixture, targets = test_tracks[0]
    v = targets[0, 0].astype(np.float64)
    alpha = (mixture[0] @ v) / (v @ v)
    expected = 10 * np.log10((alpha * v) @ (alpha * v)
                             / ((mixture[0] - alpha * v) @ (mixture[0] - alpha * v)))
    assert results["si_sdr"]["do-nothing"]["median"]["vocals"] == pytest.approx(expected, abs=1e-3)
    report = vocals_report(results)
    assert "SI-SDR" in report and "| IRM2 oracle |" in report and "× oracle" in report


def test_evaluate_vocals_oracle_uses_the_models_stft(test_tracks):
    from labkit.oracles import oracle_separation

    results = evaluate_vocals({}, test_tracks, metrics=("si_sdr",), do_nothing=False,
                              progress=False)
    _, _, targets = test_tracks[0]
    from labkit.metrics import si_sdr

    expected = si_sdr(targets, oracle_separation(targets, "irm2", n_fft=1024, hop_length=256))
    got = results["si_sdr"]["IRM2 oracle"]["median"]
    assert [got[s] for s in SOURCES] == pytest.approx(list(expected), abs=1e-6)


@pytest.mark.ffmpeg
def test_evaluate_vocals_museval_sdr(test_tracks):
    pytest.importorskip("museval")
    results = evaluate_vocals({}, test_tracks, metrics=("sdr",), progress=False)
    by_method = results["sdr"]
    assert by_method["IRM2 oracle"]["median"]["vocals"] > by_method["do-nothing"]["median"][
        "vocals"]
    assert "museval" in by_method["IRM2 oracle"]["metric"]


# ----------------------------------------------------------------------------------- CLI
def test_cli_trains_from_a_data_folder(dataset_root, tmp_path, capsys):
    workdir = tmp_path / "cli-run"
    status = cli_main(["--root", str(dataset_root), "--workdir", str(workdir), "--steps", "2",
                       "--batch-size", "1", "--levels", "2", "--width", "2", "--cpu",
                       "--valid-patches", "2", "--no-progress"])
    assert status == 0
    assert (workdir / "final.pt").is_file()
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and str(workdir) in out
    config = torch.load(workdir / "final.pt", weights_only=True)["config"]
    assert config["levels"] == 2 and config["base_channels"] == 2 and config["norm"] == "batch"


def test_cli_is_registered_under_labkit_train(dataset_root, tmp_path, capsys):
    from labkit.cli import main

    workdir = tmp_path / "cli-run"
    status = main(["train", "specunet", "--root", str(dataset_root), "--workdir", str(workdir),
                   "--steps", "1", "--batch-size", "1", "--levels", "1", "--width", "2",
                   "--no-batch-norm", "--cpu", "--valid-patches", "1", "--no-progress"])
    assert status == 0
    config = torch.load(workdir / "final.pt", weights_only=True)["config"]
    assert config["norm"] is None and config["levels"] == 1
