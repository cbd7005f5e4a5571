"""Super-resolution recipe: config, degradations, data, chunked inference, CLI, training."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from superres_support import tiny_training_config

from labkit import superres
from labkit.audio import loudness, resample
from labkit.checkpoint import save_checkpoint
from labkit.errors import AudioError, DataError, LabkitError
from labkit.metrics import lsd, snr
from labkit.models.diffusion import SuperResDiffusion

SR, LOW = 44100, 11025


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one torch thread (two only add OpenMP synchronisation on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model():
    torch.manual_seed(0)
    model = SuperResDiffusion(n_fft=256, hop_length=64, channels=8, dilations=[1], repeats=1,
                              embed_dim=8, timesteps=20)
    with torch.no_grad():  # an untrained but non-trivial generator
        model.denoiser.output.weight.normal_(0, 0.05)
    return model.eval()


def music(seconds=1.0, sr=SR, channels=1, seed=0):
    """Harmonic tones with noise bursts: content up to ~15 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    x = sum(0.1 / k * np.sin(2 * np.pi * 220 * k * t + rng.uniform(0, 6)) for k in range(1, 60)
            if 220 * k < 15000)
    x = x + 0.02 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 3 * t) > 0.5)
    return np.stack([np.roll(x, 17 * c) for c in range(channels)]).astype(np.float32)


def band_power_db(x, sr, low, high):
    mono = np.atleast_2d(x).mean(0)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size))) ** 2  # no leakage from the ends
    freqs = np.fft.rfftfreq(np.atleast_2d(x).shape[-1], 1 / sr)
    band = (freqs >= low) & (freqs <= high)
    return 10 * np.log10(spectrum[band].sum() / spectrum.sum() + 1e-30)


# --------------------------------------------------------------------------- config
def test_config_has_the_four_sections_and_every_setting_of_the_recipe():
    config = superres.load_config()
    assert set(config) == {"data", "model", "train", "inference"}
    assert config["data"]["sample_rate"] == 4 * config["data"]["low_rate"]
    for section, key in [("data", "segment_seconds"), ("model", "timesteps"), ("train", "lr"),
                         ("train", "batch_size"), ("inference", "chunk_seconds"),
                         ("inference", "sample_steps"), ("inference", "guidance_scale")]:
        assert key in config[section]
    model = superres.build_model_from_config(config)
    assert model.sample_rate == 44100 and model.schedule.timesteps == config["model"]["timesteps"]


def test_config_file_and_overrides_merge_and_unknown_keys_fail(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("train:\n  lr: 0.0005\ninference:\n  sample_steps: 10\n")
    config = superres.load_config(path, overrides={"train": {"batch_size": 2}})
    assert config["train"]["lr"] == 0.0005 and config["train"]["batch_size"] == 2
    assert config["inference"]["sample_steps"] == 10
    assert config["inference"]["guidance_scale"] == 1.5  # untouched default
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(LabkitError, match="unknown key 'learning_rate'"):
        superres.load_config(path)
    path.write_text("data:\n  degradations: {vinyl: 1.0}\n")
    with pytest.raises(LabkitError, match="unknown kinds \\['vinyl'\\]"):
        superres.load_config(path)


# --------------------------------------------------------------------------- degradations
@pytest.mark.parametrize("kind", superres.FILTERS)
def test_lowpass_keeps_the_band_and_removes_what_is_above(kind):
    t = np.arange(SR) / SR
    below, above = np.sin(2 * np.pi * 2000 * t), np.sin(2 * np.pi * 9000 * t)
    out_below = superres.lowpass(below, SR, 5000, kind)
    out_above = superres.lowpass(above, SR, 5000, kind)
    middle = slice(SR // 4, 3 * SR // 4)  # away from the filters' start-up at the edges
    gain_below = 20 * np.log10(np.std(out_below[middle]) / np.std(below[middle]))
    gain_above = 20 * np.log10(np.std(out_above[middle]) / np.std(above[middle]) + 1e-12)
    assert abs(gain_below) < 1.1 and gain_above < -60
    assert out_below.dtype == np.float32 and out_below.shape == below.shape


def test_lowpass_rejects_a_cutoff_outside_the_band():
    with pytest.raises(LabkitError, match=r"cutoff_hz=30000"):
        superres.lowpass(np.zeros(100), SR, 30000)
    with pytest.raises(LabkitError, match="kind='bessel'"):
        superres.lowpass(np.zeros(100), SR, 5000, "bessel")


@pytest.mark.parametrize("kind", superres.KINDS)
def test_degrade_band_limits_and_keeps_the_low_band(kind):
    x = music(1.0)
    y = superres.degrade(x, SR, kind, cutoff_hz=5000.0)
    assert y.shape == x.shape and y.dtype == np.float32
    assert band_power_db(y, SR, 8000, SR / 2) < -60  # nothing left above the band
    # the band under 3 kHz survives (up to the filters' 2 x 0.5 dB ripple; MP3 is lossy)
    low_x, low_y = (superres.lowpass(a, SR, 3000, "brickwall") for a in (x, y))
    bound = {"mp3": 10, "cheby1": 15, "ellip": 15}.get(kind, 30)
    assert snr(low_x[:, 2000:-2000], low_y[:, 2000:-2000]) > bound


def test_mp3_roundtrip_is_aligned_with_its_input():
    x = music(1.5)
    y = superres.mp3_roundtrip(x, SR)
    low_x, low_y = (superres.lowpass(a, SR, 2000, "brickwall") for a in (x, y))
    lags = range(-40, 41)
    best = max(lags, key=lambda k: float(np.dot(low_x[0, 4000:-4000],
                                                np.roll(low_y[0], -k)[4000:-4000])))
    assert abs(best) <= 2


def test_random_degradations_cover_the_kinds_and_the_cutoff_range():
    rng = np.random.default_rng(0)
    weights = {"soxr": 1.0, "butter": 1.0, "mp3": 0.0}
    draws = [superres.random_degradation(rng, weights, SR, (0.2, 0.3)) for _ in range(200)]
    assert {d["kind"] for d in draws} == {"soxr", "butter"}
    cutoffs = [d["cutoff_hz"] for d in draws if d["kind"] == "butter"]
    assert min(cutoffs) >= 0.2 * SR / 2 and max(cutoffs) <= 0.3 * SR / 2
    assert all(d["cutoff_hz"] is None for d in draws if d["kind"] == "soxr")


@pytest.mark.parametrize(("kind", "cutoff", "expected"), [
    ("soxr", None, LOW / 2), ("butter", 4500.0, 4500.0), ("brickwall", 6000.0, 6000.0)])
def test_estimate_cutoff_finds_the_band_edge(kind, cutoff, expected):
    noise = np.random.default_rng(1).standard_normal((1, SR)).astype(np.float32) * 0.1
    found = superres.estimate_cutoff(superres.degrade(noise, SR, kind, cutoff), SR)
    assert abs(found - expected) < 0.08 * expected
    # full-band noise and silence have no cutoff
    assert superres.estimate_cutoff(noise, SR) > 0.95 * SR / 2
    assert superres.estimate_cutoff(np.zeros((1, SR)), SR) == SR / 2


# --------------------------------------------------------------------------- data
def write_pair_folder(root, names=("a", "b"), seconds=0.6, with_low=("a",)):
    for split in ("train", "valid"):
        (root / split / "high").mkdir(parents=True)
        (root / split / "low").mkdir()
        for i, name in enumerate(names):
            x = music(seconds, channels=2, seed=i)
            sf.write(root / split / "high" / f"{name}.wav", x.T, SR)
            if name in with_low:
                low = resample(superres.degrade(x, SR, "soxr"), SR, LOW)
                sf.write(root / split / "low" / f"{name}.wav", low.T, LOW)


def test_find_audio_pairs_and_explains_a_missing_folder(tmp_path):
    write_pair_folder(tmp_path)
    pairs = superres.find_audio(tmp_path, "train")
    assert [(h.name, lo.name if lo else None) for h, lo in pairs] == [("a.wav", "a.wav"),
                                                                     ("b.wav", None)]
    with pytest.raises(DataError, match="train/high"):
        superres.find_audio(tmp_path / "nothing", "train")


def test_segments_are_deterministic_per_epoch_and_use_low_files(tmp_path):
    write_pair_folder(tmp_path)
    pairs = superres.find_audio(tmp_path, "train")
    data = superres.SuperResSegments(pairs, segment_seconds=0.25, examples_per_epoch=6,
                                     degradations={"butter": 1.0}, seed=3)
    target, condition = data[0]
    assert target.shape == condition.shape == (1, round(0.25 * SR))
    assert target.dtype == torch.float32
    torch.testing.assert_close(data[0][0], target)  # same (seed, epoch, index): same example
    data.set_epoch(1)
    assert not torch.equal(data[0][0], target)
    # conditions are band-limited and at the drawn level (RMS in level_db)
    for index in range(6):
        target, condition = data[index]
        level = 20 * np.log10(float(condition.pow(2).mean().sqrt()))
        assert -34.1 <= level <= -13.9
        assert band_power_db(condition.numpy(), SR, 7500, SR / 2) < -50
    # the low file is used as it is: an example of file "a" equals its stored low version
    only_a = superres.SuperResSegments([pairs[0]], segment_seconds=0.25, examples_per_epoch=1,
                                       level_db=(-20.0, -20.0), seed=0)
    _, condition = only_a[0]
    assert band_power_db(condition.numpy(), SR, LOW / 2 + 200, SR / 2) < -60


# --------------------------------------------------------------------------- loudness, inference
def test_streamed_loudness_equals_bs1770():
    x = music(2.3, channels=2)
    meter = superres._LoudnessMeter(SR, 2)
    for start in range(0, x.shape[-1], 12345):  # blocks that do not line up with 100 ms
        meter.add(x[:, start:start + 12345])
    assert math.isclose(meter.loudness(), loudness(x, SR), abs_tol=1e-9)
    silent = superres._LoudnessMeter(SR, 1)
    silent.add(np.zeros((1, SR)))
    assert silent.loudness() == -math.inf


def test_upsample_keeps_the_low_band_and_fills_the_high_band():
    model = tiny_model()
    reference = music(1.5)
    low = resample(reference, SR, LOW)
    out = superres.upsample(low, LOW, model, steps=3, chunk_seconds=0.5, crossfade_seconds=0.1)
    assert out.shape == (1, round(low.shape[-1] * SR / LOW)) and np.isfinite(out).all()
    given = resample(low, LOW, SR)[:, :out.shape[-1]]
    # below the estimated cutoff (x 0.97) the output is the input
    low_out, low_given = (superres.lowpass(a, SR, 4200, "brickwall") for a in (out, given))
    assert snr(low_given, low_out) > 30
    assert band_power_db(out, SR, 6000, SR / 2) > band_power_db(given, SR, 6000, SR / 2) + 40


def test_loudness_is_normalised_in_and_restored_out():
    model = tiny_model()
    low = resample(music(1.0), SR, LOW)
    out = superres.upsample(low, LOW, model, steps=2, chunk_seconds=0.5)
    louder = superres.upsample(8.0 * low, LOW, model, steps=2, chunk_seconds=0.5)
    np.testing.assert_allclose(louder, 8.0 * out, rtol=1e-3, atol=1e-5)


def test_silence_stays_silence_without_nan():
    model = tiny_model()
    silent = superres.upsample(np.zeros((2, LOW)), LOW, model, steps=2)
    assert silent.shape == (2, SR) and np.isfinite(silent).all() and not silent.any()
    whisper = superres.upsample(1e-9 * np.random.default_rng(0).standard_normal(LOW), LOW,
                                model, steps=2)
    assert whisper.shape == (SR,) and np.isfinite(whisper).all()
    assert np.abs(whisper).max() < 1e-7


def test_full_band_input_passes_through_unchanged():
    model = tiny_model()
    noise = (0.1 * np.random.default_rng(2).standard_normal((1, SR // 2))).astype(np.float32)
    out = superres.upsample(noise, SR, model, steps=2, chunk_seconds=0.25)
    np.testing.assert_allclose(out, noise, atol=1e-5)


def test_upsample_file_streams_the_same_result_as_in_memory(tmp_path):
    model = tiny_model()
    low = resample(music(1.2, channels=2), SR, LOW)
    sf.write(tmp_path / "in.wav", low.T, LOW, subtype="FLOAT")
    path = superres.upsample_file(tmp_path / "in.wav", model, tmp_path / "out" / "o.wav",
                                  steps=2, chunk_seconds=0.5, progress=False)
    written, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == SR and written.shape == (round(low.shape[-1] * SR / LOW), 2)
    expected = superres.upsample(low, LOW, model, steps=2, chunk_seconds=0.5)
    np.testing.assert_allclose(written.T, expected, atol=1e-5)
    assert not list((tmp_path / "out").glob(".*part"))


def test_evaluate_scores_the_baselines():
    clips = {"music": music(1.0)}
    results = superres.evaluate(None, clips, SR)
    assert set(results) == {"soxr", "input"}
    soxr = results["soxr"]["music"]
    # the soxr baseline keeps the low band (good SNR) but its high band is empty (large LSD)
    assert soxr["snr"] > 10 and soxr["lsd_high"] > soxr["lsd"] > 1.0
    reference = clips["music"]
    baseline = resample(resample(reference, SR, LOW), LOW, SR)[:, :SR]
    assert math.isclose(soxr["lsd"], float(lsd(reference, baseline, sr=SR)), rel_tol=1e-6)


# --------------------------------------------------------------------------- CLI and training
def test_cli_upsample(tmp_path, capsys):
    from labkit.cli import main

    save_checkpoint(tmp_path / "m.pt", model=tiny_model(), step=0)
    sf.write(tmp_path / "in.wav", resample(music(0.5), SR, LOW).T, LOW)
    status = main(["upsample", str(tmp_path / "in.wav"), "--model", str(tmp_path / "m.pt"),
                   "--out", str(tmp_path / "out.wav"), "--steps", "2", "--chunk-seconds", "0.25",
                   "--no-progress"])
    assert status == 0 and "wrote" in capsys.readouterr().out
    assert sf.info(str(tmp_path / "out.wav")).samplerate == SR
    status = main(["upsample", str(tmp_path / "missing.wav"), "--model",
                   str(tmp_path / "m.pt"), "--out", str(tmp_path / "o.wav")])
    assert status == 2 and "missing.wav" in capsys.readouterr().err


def test_training_runs_saves_and_resumes(tmp_path):
    write_pair_folder(tmp_path / "data")
    config = tiny_training_config(tmp_path / "data", minutes=None, val_every=2)
    result = superres.train_superres(tmp_path / "run", config, max_steps=4, progress=False)
    assert result.steps == 4 and result.stopped_by == "max_steps"
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "final.pt").is_file()
    assert len(result.history["val_loss"]) == 2 and not result.model.training
    again = superres.train_superres(tmp_path / "run", config, max_steps=4, progress=False)
    assert again.steps == 4  # a finished run returns at once
    upsampler = superres.load_upsampler(tmp_path / "run" / "best.pt", config, steps=2)
    assert upsampler.steps == 2 and upsampler.guidance_scale == 1.5


def test_a_spent_budget_stops_training_and_is_not_trained_again(tmp_path):
    write_pair_folder(tmp_path / "data")
    config = tiny_training_config(tmp_path / "data", val_every=1000)
    first = superres.train_superres(tmp_path / "run", config, minutes=1e-6, progress=False)
    assert first.stopped_by == "budget" and first.steps == 5  # stops at the first log
    assert first.checkpoint is not None and first.checkpoint.is_file()
    again = superres.train_superres(tmp_path / "run", config, minutes=1e-6, progress=False)
    assert again.steps == first.steps


def test_errors_name_the_problem():
    with pytest.raises(AudioError):
        superres.upsample(np.full(100, np.nan), LOW, tiny_model())
    with pytest.raises(LabkitError, match="needs cutoff_hz"):
        superres.degrade(np.zeros(1000), SR, "butter")
