"""Four-stem separation glue (labkit.stems): loss, data, training and resume, evaluation, memory,
and the ``labkit train waveunet`` / ``labkit separate`` commands."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from labkit import cli, stems
from labkit.checkpoint import load_checkpoint, save_checkpoint
from labkit.errors import CheckpointError, LabkitError
from labkit.models import register_model
from labkit.models.wave_unet import WaveUNet

TINY = {"filter_length": 64, "stride": 32, "n_filters": 64, "depth": 2, "width": 8,
        "growth": 1.5, "sample_rate": 8000, "chunk_seconds": 0.5}
REPO = Path(__file__).resolve().parents[1]


@register_model("test_not_a_separator")
class NotASeparator(nn.Module):
    """A registered model without sample_rate/channels/sources."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@register_model("test_failing_separator")
class FailingSeparator(nn.Module):
    """A separator whose second call fails: for the no-partial-output test."""

    sources = ("vocals", "drums", "bass", "other")

    def __init__(self, sample_rate: int = 8000, channels: int = 2) -> None:
        super().__init__()
        self.sample_rate, self.channels = sample_rate, channels
        self.chunk_seconds = 0.25
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("model failed on purpose")
        return self.scale * x.unsqueeze(1).repeat(1, 4, 1, 1) / 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A tiny toy-MUSDB set: 2 train, 1 valid and 1 test track of 1 s at 8 kHz, stereo."""
    from labkit.data import toy

    return toy.generate(tmp_path_factory.mktemp("toy") / "set", n_train=3, n_test=1,
                        seconds=1.0, sample_rate=8000, workers=1, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random-weight WaveUNet checkpoint (8 kHz, stereo)."""
    torch.manual_seed(0)
    model = WaveUNet(**TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, model=model.eval(), step=0)


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# ----------------------------------------------------------------------------- loss
def test_stem_l1_loss_known_value_and_cropping():
    estimates = torch.zeros(2, 4, 2, 10)
    targets = torch.arange(2 * 4 * 2 * 12, dtype=torch.float32).reshape(2, 4, 2, 12)
    loss = stems.stem_l1_loss(estimates, targets)
    assert loss.shape == ()
    assert torch.isclose(loss, targets[..., :10].abs().mean())
    assert stems.stem_l1_loss(targets, targets) == 0
    with pytest.raises(LabkitError, match=r"must agree in \(batch, sources, channels\)"):
        stems.stem_l1_loss(torch.zeros(2, 4, 1, 10), torch.zeros(2, 4, 2, 10))


def test_stems_step_trains_a_model():
    torch.manual_seed(0)
    model = WaveUNet(**TINY)
    batch = (torch.randn(2, 2, 400), torch.randn(2, 4, 2, 400))
    loss = stems.stems_step(model, batch, torch.device("cpu"))
    loss.backward()
    assert loss.requires_grad is True and model.outlet.weight.grad is not None


# ----------------------------------------------------------------------------- data
@pytest.mark.parametrize("channels", [1, 2])
def test_segment_loaders_give_mixture_and_stems(data_root, channels):
    train, valid = stems.segment_loaders(data_root, segment_seconds=0.25, batch_size=3,
                                         sample_rate=8000, channels=channels,
                                         samples_per_epoch=6, valid_segments=2)
    mixture, targets = next(iter(train))
    assert mixture.shape == (3, channels, 2000)
    assert targets.shape == (3, 4, channels, 2000)
    assert torch.allclose(targets.sum(1), mixture, atol=1e-6)
    assert len(train) == 2
    assert valid is not None and len(valid.dataset) == 2  # 1 valid track x 2 segments


def test_segment_loaders_reject_bad_sizes(data_root):
    with pytest.raises(LabkitError, match="batch_size=0"):
        stems.segment_loaders(data_root, batch_size=0)
    with pytest.raises(LabkitError, match="samples_per_epoch=2 is smaller than one batch of 4"):
        stems.segment_loaders(data_root, batch_size=4, samples_per_epoch=2, sample_rate=8000)


# ----------------------------------------------------------------------------- training
def test_train_waveunet_checkpoints_and_resumes(data_root, tmp_path):
    options = {"model_config": {"name": "wave_unet", **TINY}, "root": data_root,
               "segment_seconds": 0.25, "batch_size": 2, "samples_per_epoch": 8,
               "valid_segments": 1, "ckpt_every": 2, "log_every": 1, "val_every": 2,
               "device": "cpu", "progress": False}
    first = stems.train_waveunet(tmp_path, max_steps=3, **options)
    assert first.steps == 3 and first.stopped_by == "max_steps"
    assert not first.model.training
    saved = load_checkpoint(tmp_path / "final.pt", expected_model="wave_unet")
    assert saved["step"] == 3 and saved["config"]["width"] == 8
    assert {"model", "optimizer", "step", "epoch", "config", "manifest"} <= set(saved)
    assert (tmp_path / "checkpoints" / "step_0000002.pt").is_file()
    again = stems.train_waveunet(tmp_path, max_steps=5, resume="auto", **options)
    assert again.steps == 5
    assert again.history["step"] == [1, 2, 3, 4, 5]
    with pytest.raises(CheckpointError, match="already holds a training run"):
        stems.train_waveunet(tmp_path, max_steps=5, **options)


def test_train_waveunet_anneals_and_keeps_the_filterbank_slower(data_root, tmp_path):
    result = stems.train_waveunet(
        tmp_path, model_config={"name": "wave_unet", **TINY}, root=data_root, max_steps=4,
        segment_seconds=0.25, batch_size=2, samples_per_epoch=8, valid_segments=0, lr=2e-3,
        filterbank_lr=0.1, log_every=1, device="cpu", progress=False)
    # the rate logged at step k was used for step k; it is lowered after every log
    expected = [2e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * k / 4))) for k in range(4)]
    assert result.history["lr"] == pytest.approx(expected)
    groups = load_checkpoint(tmp_path / "final.pt")["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])


def test_train_waveunet_stops_on_the_time_budget(data_root, tmp_path):
    result = stems.train_waveunet(
        tmp_path, model_config={"name": "wave_unet", **TINY}, root=data_root,
        segment_seconds=0.25, batch_size=2, samples_per_epoch=8, minutes=1e-6, log_every=1,
        device="cpu", progress=False)
    assert result.stopped_by == "budget" and result.steps == 1


def test_train_waveunet_needs_a_stopping_rule(tmp_path):
    with pytest.raises(LabkitError, match="give minutes or max_steps"):
        stems.train_waveunet(tmp_path)


@pytest.mark.slow
def test_cli_training_killed_with_sigkill_resumes(data_root, tmp_path):
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "labkit", "train", "waveunet", "--data-root",
               str(data_root), "--workdir", str(workdir), "--width", "4", "--depth", "1",
               "--segment-seconds", "0.25", "--batch-size", "2", "--max-steps", "40",
               "--ckpt-every", "2", "--log-every", "1", "--val-every", "10", "--cpu",
               "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command + ["--resume", "auto"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while not list((workdir / "checkpoints").glob("step_*.pt")):
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (workdir / "final.pt").exists(), "the run finished before it could be killed"
    killed_at = max(load_checkpoint(p)["step"]
                    for p in (workdir / "checkpoints").glob("step_*.pt"))
    assert killed_at < 40
    done = subprocess.run(command + ["--resume", "auto"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 40 steps" in done.stdout
    final = load_checkpoint(workdir / "final.pt", expected_model="wave_unet")
    assert final["step"] == 40 and final["config"]["width"] == 4
    manifest = final["manifest"]
    assert manifest["resumed_from"].endswith(f"step_{killed_at:07d}.pt")
    assert final["extra"]["history"]["step"] == list(range(1, 41))


# ----------------------------------------------------------------------------- loading
def test_channel_adapter_separates_each_channel_on_its_own():
    torch.manual_seed(0)
    model = WaveUNet(**TINY).eval()
    adapter = stems.ChannelAdapter(model, 3)
    x = torch.randn(2, 3, 500)
    out = adapter(x)
    assert out.shape == (2, 4, 3, 500)
    alone = model(x[:, 1:2].expand(-1, 2, -1)).mean(dim=2)  # channel 1 as dual mono
    assert torch.allclose(out[:, :, 1], alone, atol=1e-6)
    assert adapter.valid_length(100) == model.valid_length(100)
    assert (adapter.sample_rate, adapter.sources) == (8000, model.sources)


def test_load_separator_from_a_file_or_a_run_folder(checkpoint, tmp_path):
    model = stems.load_separator(checkpoint)
    assert isinstance(model, WaveUNet) and not model.training
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_0000004.pt").write_bytes(checkpoint.read_bytes())
    assert isinstance(stems.load_separator(run), WaveUNet)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        stems.load_separator(empty)


def test_load_separator_refuses_other_models(tmp_path):
    path = save_checkpoint(tmp_path / "other.pt", model=NotASeparator(), step=0)
    with pytest.raises(CheckpointError, match="'test_not_a_separator', which is not a "
                                              "waveform separator"):
        stems.load_separator(path)


# ----------------------------------------------------------------------------- separate CLI
@pytest.mark.parametrize("suffix, rate, channels", [
    (".wav", 44100, 2), (".flac", 16000, 1), (".ogg", 48000, 3), (".mp3", 32000, 2),
    (".wav", 8000, 1),
])
def test_separate_cli_any_format_rate_and_channels(checkpoint, tmp_path, capsys, suffix, rate,
                                                   channels):
    rng = np.random.default_rng(0)
    song = tmp_path / f"my song{suffix}"
    audio = (0.1 * rng.standard_normal((round(0.7 * rate), channels))).astype(np.float32)
    sf.write(song, audio, rate)
    frames = sf.info(song).frames
    out = tmp_path / "out"
    status = cli.main(["separate", str(song), "--model", str(checkpoint), "--out", str(out),
                       "--no-progress", "--cpu"])
    assert status == 0
    folder = out / "my song_separated"
    names = _outputs(folder)
    assert names == sorted(f"my song_{s}.wav" for s in ("vocals", "drums", "bass", "other"))
    for name in names:
        info = sf.info(folder / name)
        assert (info.samplerate, info.channels, info.frames) == (rate, channels, frames)
    printed = capsys.readouterr().out
    assert f"vocals: {folder / 'my song_vocals.wav'}" in printed


def test_separate_cli_writes_beside_the_input_by_default(checkpoint, tmp_path):
    song = tmp_path / "a.wav"
    sf.write(song, np.zeros((4000, 2), np.float32) + 0.01, 8000)
    assert cli.main(["separate", str(song), "--model", str(checkpoint), "--no-progress",
                     "--stems", "vocals", "bass"]) == 0
    assert _outputs(tmp_path / "a_separated") == ["a_bass.wav", "a_vocals.wav"]


def test_separate_cli_unreadable_and_missing_files(checkpoint, tmp_path, capsys):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(os.urandom(2000))
    out = tmp_path / "out"
    assert cli.main(["separate", str(bad), "--model", str(checkpoint), "--out", str(out),
                     "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("labkit: error: ") and str(bad) in error
    assert "cannot" in error
    assert not out.exists()
    missing = tmp_path / "nothing.flac"
    assert cli.main(["separate", str(missing), "--model", str(checkpoint), "--out", str(out),
                     "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("kind, message", [
    ("state_dict", "bare state_dict"),
    ("garbage", "damaged or not a PyTorch checkpoint"),
    ("other_model", "is not a separator"),
    ("missing", "neither a shipped model"),
])
def test_separate_cli_foreign_checkpoints(tmp_path, capsys, kind, message):
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((4000, 2), np.float32), 8000)
    model_path = tmp_path / "model.pt"
    if kind == "state_dict":
        torch.save(WaveUNet(**TINY).state_dict(), model_path)
    elif kind == "garbage":
        model_path.write_bytes(b"not a checkpoint at all" * 10)
    elif kind == "other_model":
        save_checkpoint(model_path, model=NotASeparator(), step=0)
    out = tmp_path / "out"
    assert cli.main(["separate", str(song), "--model", str(model_path), "--out", str(out),
                     "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_separate_cli_leaves_no_partial_output_when_the_model_fails(tmp_path):
    path = save_checkpoint(tmp_path / "failing.pt", model=FailingSeparator(), step=0)
    song = tmp_path / "song.wav"
    sf.write(song, 0.1 * np.ones((8000, 2), np.float32), 8000)  # 1 s: several 0.25 s chunks
    out = tmp_path / "out"
    (out / "song_separated").mkdir(parents=True)
    (out / "song_separated" / "keep.txt").write_text("not ours")
    with pytest.raises(RuntimeError, match="failed on purpose"):
        cli.main(["separate", str(song), "--model", str(path), "--out", str(out),
                  "--no-progress"])
    assert _outputs(out) == ["keep.txt", "song_separated"]


def test_separate_cli_without_model_and_without_run(tmp_path, monkeypatch, capsys):
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((4000, 2), np.float32), 8000)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABKIT_MODELS", str(tmp_path / "no-models"))
    assert cli.main(["separate", str(song), "--no-progress"]) == 2
    assert "train one with `labkit train waveunet`" in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_stems_identity_model_scores_like_do_nothing(data_root):
    tracks = stems.evaluation_tracks(data_root, seconds=0.9)
    assert len(tracks) == 1
    _, mixture, true = tracks[0]
    assert mixture.shape == (2, 7200) and true.shape == (4, 2, 7200)
    identity = WaveUNet(**TINY).eval()
    with torch.no_grad():
        identity.outlet.weight.zero_()
        identity.outlet.bias.fill_(40.0)
    results = stems.evaluate_stems({"identity": identity}, tracks, sr=8000, n_fft=512,
                                   hop_length=128, progress=False)
    assert list(results) == ["identity", "IRM2 oracle", "do-nothing"]
    for stem in ("vocals", "drums", "bass", "other"):
        assert results["identity"]["median"][stem] == pytest.approx(
            results["do-nothing"]["median"][stem], abs=1e-3)
        assert results["IRM2 oracle"]["median"][stem] > results["do-nothing"]["median"][stem]
    assert results["IRM2 oracle"]["oracle"] is True and results["identity"]["oracle"] is False
    assert stems.mean_sdr(results["identity"]) == pytest.approx(
        np.mean(list(results["do-nothing"]["median"].values())), abs=1e-3)
    table = stems.stems_report(results)
    assert "| identity |" in table and "IRM2 oracle" in table and "× oracle" in table


def test_evaluate_stems_checks_the_estimate_shape(data_root):
    tracks = stems.evaluation_tracks(data_root, seconds=0.5)
    with pytest.raises(LabkitError, match="returned shape"):
        stems.evaluate_stems({"bad": lambda mixture: mixture}, tracks, sr=8000,
                             oracle=False, do_nothing=False, progress=False)


# ----------------------------------------------------------------------------- memory
@pytest.mark.slow
def test_measure_training_memory_grows_with_the_audio_per_step():
    rows = stems.measure_training_memory([2], [0.25, 8.0], model_config=TINY, steps=1,
                                         progress=False)
    assert [(r["batch_size"], r["segment_seconds"]) for r in rows] == [(2, 0.25), (2, 8.0)]
    for row in rows:
        assert row["peak_mb"] >= row["before_mb"] > 50  # torch alone needs more than 50 MB
        assert row["audio_seconds"] == 2 * row["segment_seconds"]
    assert rows[1]["training_mb"] > rows[0]["training_mb"] + 20
    assert "| 2 | 8 | 16 |" in stems.memory_table(rows)
