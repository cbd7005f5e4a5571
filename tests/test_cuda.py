"""The GPU code path: every trainer and separator of the course on CUDA, with mixed precision.

labkit runs the same code on the CPU and the GPU; on CUDA the Trainer and ``separate`` add
autocast (float16) and a GradScaler. These tests run only where CUDA is there (the 2-core CI
machine skips them); they guard what the CPU tests cannot see, e.g. an operation whose float16
and float32 operands meet only under CUDA autocast.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import soundfile as sf
import torch
from superres_support import tiny_training_config

from labkit import finetune as ft
from labkit import stems, superres
from labkit.audio import resample
from labkit.metrics import snr
from labkit.models.spec_unet import SpecUNet, SpecUNetSeparator
from labkit.models.wave_unet import WaveUNet
from labkit.separate import separate
from labkit.vocals import train_spec_unet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SR = 8000
WAVE = {"filter_length": 64, "stride": 32, "n_filters": 64, "depth": 2, "width": 8,
        "growth": 1.5, "sample_rate": SR, "chunk_seconds": 0.5}


def tones(seconds: float = 2.0, channels: int = 2, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A few harmonic tones with noise: ``(channels, samples)`` float32 at ``sr``."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    x = sum(0.2 / k * np.sin(2 * np.pi * 180 * k * t + rng.uniform(0, 6)) for k in range(1, 15))
    x = x + 0.01 * rng.standard_normal(t.size)
    return np.stack([np.roll(x, 11 * c) for c in range(channels)]).astype(np.float32)


def same_on_both(model: torch.nn.Module, mixture: np.ndarray, **options) -> None:
    """Separation on the GPU (float16 autocast) agrees with the CPU's to better than 30 dB."""
    on_cpu = separate(copy.deepcopy(model).cpu().eval(), mixture, SR, device="cpu",
                      progress=False, **options)
    on_gpu = separate(copy.deepcopy(model).eval(), mixture, SR, device="cuda", progress=False,
                      **options)
    assert on_gpu.shape == on_cpu.shape and np.isfinite(on_gpu).all()
    assert snr(on_cpu.reshape(-1), on_gpu.reshape(-1)) > 30


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from labkit.data import toy

    return toy.generate(tmp_path_factory.mktemp("toy") / "set", n_train=3, n_test=1,
                        seconds=1.0, sample_rate=SR, workers=1, progress=False)


def test_wave_unet_trains_with_amp_resumes_and_separates(data_root, tmp_path):
    options = {"model_config": {"name": "wave_unet", **WAVE}, "root": data_root,
               "segment_seconds": 0.25, "batch_size": 2, "samples_per_epoch": 8,
               "device": "cuda", "progress": False, "val_every": 2, "ckpt_every": 2}
    first = stems.train_waveunet(tmp_path, max_steps=3, **options)
    assert first.steps == 3 and np.isfinite(first.history["train_loss"]).all()
    assert next(first.model.parameters()).is_cuda
    again = stems.train_waveunet(tmp_path, max_steps=5, resume="auto", **options)
    assert again.steps == 5 and np.isfinite(again.history["train_loss"]).all()
    same_on_both(again.model, tones())


def test_wave_unet_energies_stay_float32_and_finite_under_autocast():
    model = WaveUNet(**WAVE).cuda()
    loud = 30.0 * torch.ones(1, 2, 64, 40, device="cuda", dtype=torch.float16)  # 60**2 > 65504
    with torch.autocast("cuda", dtype=torch.float16):
        energies = model.energies(loud)
    assert energies.dtype == torch.float32 and torch.isfinite(energies).all()


def test_spec_unet_trains_with_amp_and_separates(tmp_path):
    songs = [np.stack([tones(3.0, 1, seed)[0], tones(3.0, 1, seed + 10)[0] * 0.5])
             for seed in range(3)]
    config = {"levels": 2, "base_channels": 4, "kernel_size": 3, "norm": "batch",
              "log_input": True}
    result = train_spec_unet(tmp_path, model_config=config, train_songs=songs,
                             valid_songs=songs[:1], max_steps=4, batch_size=2, val_every=2,
                             valid_patches=2, device="cuda", progress=False, tensorboard=False)
    assert result.steps == 4 and np.isfinite(result.history["train_loss"]).all()
    separator = SpecUNetSeparator.from_unet(result.model, sample_rate=SR, n_fft=256,
                                            hop_length=64, chunk_frames=32)
    same_on_both(separator, tones(2.0, 1))


def test_finetune_on_the_gpu(tmp_path):
    torch.manual_seed(0)
    unet = SpecUNet(levels=2, base_channels=4, kernel_size=3, norm="batch", log_input=True)
    model = SpecUNetSeparator.from_unet(unet, sample_rate=SR, n_fft=256, hop_length=64,
                                        chunk_frames=32)
    voice, rest = tones(6.0, 1, 0), tones(6.0, 1, 1) * 0.5
    song = ft.load_song(voice + rest, {"vocals": voice}, sr=SR, name="tones")
    run = ft.finetune(model, song, workdir=tmp_path / "run", epochs=1, steps_per_epoch=6,
                      lr=1e-2, batch_size=2, device="cuda", progress=False)
    assert run.steps == 6 and np.isfinite(run.history["train_loss"]).all()


def test_superres_trains_and_upsamples_on_the_gpu(tmp_path):
    high_rate, low_rate = 44100, 11025  # the recipe's rates
    for split in ("train", "valid"):
        (tmp_path / "data" / split / "high").mkdir(parents=True)
        for i in range(2):
            sf.write(tmp_path / "data" / split / "high" / f"{i}.wav",
                     tones(0.6, 2, i, high_rate).T, high_rate)
    config = tiny_training_config(tmp_path / "data", minutes=None, val_every=2)
    result = superres.train_superres(tmp_path / "run", config, max_steps=4, progress=False)
    assert result.steps == 4 and np.isfinite(result.history["train_loss"]).all()
    assert next(result.model.parameters()).is_cuda
    upsampler = superres.load_upsampler(tmp_path / "run" / "best.pt", config, steps=2,
                                        device="cuda")
    low = resample(tones(1.0, 1, sr=high_rate), high_rate, low_rate)
    high = superres.upsample(low, low_rate, upsampler, chunk_seconds=0.5, crossfade_seconds=0.1)
    assert high.shape == (1, high_rate) and np.isfinite(high).all()
