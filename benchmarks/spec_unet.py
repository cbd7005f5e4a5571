"""Notebook 02's spectrogram U-Net against Open-Unmix at an equal wall-clock training budget.

Run (full mode, the issue's setting: 10 minutes of training per model on 2 CPU threads, then
evaluation on every test track of the built-in set; about 25 minutes in all)::

    .venv/bin/python benchmarks/spec_unet.py --minutes 10

Both models train on the same data: the ``train`` split of the built-in toy-MUSDB set ("full":
32 training and 8 validation songs of 20 s), resampled once to 22.05 kHz mono and held in memory,
with the same augmentation (vocals and accompaniment from random songs and offsets, random gains).

- **Spec U-Net**: :data:`labkit.vocals.RECIPE` (4 levels, 16 -> 128 channels, batch norm, log
  input), 1024/256 STFT patches of 128 frames, batch 8, Adam 1e-3, masked L1 loss.
- **Open-Unmix** (``openunmix`` from PyPI, untrained; no pretrained weights): its
  ``OpenUnmix`` model for the vocals target with its own front-end (``openunmix.transforms``
  STFT + ComplexNorm, mono) at 2048/512 (its 4096/1024 at 44.1 kHz, scaled to 22.05 kHz), all
  1025 bins, input mean/scale from the training mixtures as its ``get_statistics`` does, 6 s
  segments, batch 16, Adam 1e-3 with weight decay 1e-5, MSE on magnitudes: its published
  recipe. Separation through ``openunmix.model.Separator`` with the mixture's phase
  (``niter=0``) and the residual as accompaniment.

Each trains on the shared :class:`labkit.train.Trainer` until the budget is spent (the Trainer
then validates and writes ``final.pt``), keeping the weights of the lowest validation loss.
Evaluation: whole test tracks (20 s, 22.05 kHz mono) through :func:`labkit.separate.separate`;
vocals and accompaniment SDR in the museval convention (BSSEval v4, median over 1 s frames, then
median over tracks) and SI-SDR (whole signal, median over tracks), beside the IRM2 oracle with
the U-Net's STFT (1024/256 at 22.05 kHz) and the do-nothing baseline. Speed: training steps per
second and the inference real-time factor (separation time / audio duration, 2 threads).

Writes ``benchmarks/results/spec_unet.json`` and prints the tables. ``--fast`` is a smoke test
(tiny data, seconds of training).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "spec_unet.json"
SR = 22050


# --------------------------------------------------------------------------------- Open-Unmix
class OpenUnmixVocals(nn.Module):
    """Open-Unmix (vocals target) in labkit's Separator protocol: ``(batch, 1, samples)`` ->
    ``(batch, 2, 1, samples)`` (vocals, residual accompaniment), mixture phase (niter=0)."""

    sources = ("vocals", "accompaniment")

    def __init__(self, unmix: nn.Module, n_fft: int, hop_length: int,
                 chunk_seconds: float = 30.0) -> None:
        from openunmix.model import Separator

        super().__init__()
        self.separator = Separator({"vocals": unmix}, niter=0, residual=True,
                                   sample_rate=float(SR), n_fft=n_fft, n_hop=hop_length,
                                   nb_channels=1, wiener_win_len=None)
        self.sample_rate, self.channels, self.chunk_seconds = SR, 1, chunk_seconds

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.separator(mixture)


def open_unmix_statistics(songs: list[np.ndarray], encoder: nn.Module) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Per-bin mean and standard deviation of the training mixtures' magnitudes (over frames),
    what Open-Unmix's ``get_statistics`` feeds its input scaler."""
    frames = []
    with torch.no_grad():
        for song in songs:
            mixture = torch.from_numpy(song.sum(0))[None, None]
            frames.append(encoder(mixture)[0, 0].T.numpy())  # (frames, bins)
    stacked = np.concatenate(frames)
    return stacked.mean(0), np.maximum(stacked.std(0), 1e-4)


def train_open_unmix(train_songs, valid_songs, workdir: Path, minutes: float, *,
                     hidden_size: int = 512, n_fft: int = 2048, hop_length: int = 512,
                     segment_seconds: float = 6.0, batch_size: int = 16,
                     progress: bool = True, seed: int = 0, clock: str = "wall",
                     device: torch.device | str = "cpu") -> dict:
    """Train Open-Unmix for the vocals on the songs for ``minutes``; returns model and numbers."""
    from openunmix.model import OpenUnmix
    from openunmix.transforms import ComplexNorm, TorchSTFT
    from torch.utils.data import DataLoader

    from labkit.train import Trainer
    from labkit.vocals import BudgetStop, VocalPatches

    torch.manual_seed(seed)
    encoder = nn.Sequential(TorchSTFT(n_fft=n_fft, n_hop=hop_length, center=False),
                            ComplexNorm(mono=True))
    mean, scale = open_unmix_statistics(train_songs, encoder)
    encoder.to(device)  # not part of the model: the Trainer does not move it
    unmix = OpenUnmix(nb_bins=n_fft // 2 + 1, nb_channels=1, hidden_size=hidden_size,
                      input_mean=mean, input_scale=scale, max_bin=n_fft // 2 + 1)
    segment = round(segment_seconds * SR)
    train = VocalPatches(train_songs, output="waveform", segment_samples=segment, seed=seed)
    valid = VocalPatches(valid_songs, output="waveform", segment_samples=segment,
                         samples_per_epoch=16, random_mix=False, gain=None, seed=seed + 1)

    def open_unmix_step(model, batch, device):
        mixture, vocals = batch
        return F.mse_loss(model(encoder(mixture)), encoder(vocals))

    budget = BudgetStop(60 * minutes, clock)
    cpu_start = time.process_time()
    trainer = Trainer(unmix, DataLoader(train, batch_size=batch_size, drop_last=True),
                      val_data=DataLoader(valid, batch_size=batch_size), step_fn=open_unmix_step,
                      workdir=workdir, epochs=10**9, lr=1e-3, weight_decay=1e-5,
                      device=device, val_every=50, ckpt_every=None, log_every=2, seed=seed,
                      overwrite=True, progress=progress, tensorboard=False, callbacks=[budget])
    trainer.total_steps = None
    trainer.fit()
    if trainer.best_path.is_file():
        state = torch.load(trainer.best_path, map_location="cpu", weights_only=True)["model"]
        unmix.load_state_dict(state)
    unmix.eval()
    return {"model": OpenUnmixVocals(unmix, n_fft, hop_length), "steps": trainer.step,
            "seconds": trainer.elapsed, "cpu_seconds": time.process_time() - cpu_start,
            "history": dict(trainer.history),
            "parameters": sum(p.numel() for p in unmix.parameters()),
            "settings": {"hidden_size": hidden_size, "n_fft": n_fft, "hop_length": hop_length,
                         "segment_seconds": segment_seconds, "batch_size": batch_size,
                         "lr": 1e-3, "weight_decay": 1e-5, "loss": "MSE on magnitudes",
                         "separation": "openunmix Separator, niter=0, residual=True"}}


# --------------------------------------------------------------------------------- measuring
def real_time_factor(model: nn.Module, tracks) -> float:
    """Separation wall time / audio duration over ``tracks`` (as labkit.separate runs it)."""
    from labkit.vocals import separator_estimator

    estimate = separator_estimator(model, SR)
    start = time.perf_counter()
    for _, mixture, _ in tracks:
        estimate(mixture)
    seconds = time.perf_counter() - start
    return seconds / sum(m.shape[-1] / SR for _, m, _ in tracks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="training budget per model in wall-clock minutes (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="what --minutes measures: wall time (default, the issue's budget) "
                             "or this process's CPU time per thread, which emulates the wall "
                             "time of an idle machine when others share this one")
    parser.add_argument("--width", type=int, default=None,
                        help="U-Net base channels (default: the recipe's)")
    parser.add_argument("--hidden-size", type=int, default=512, help="Open-Unmix hidden size")
    parser.add_argument("--open-unmix-seconds", type=float, default=6.0,
                        help="Open-Unmix training segment length (default 6 s, its recipe's)")
    parser.add_argument("--open-unmix-batch", type=int, default=16,
                        help="Open-Unmix batch size (default 16, its recipe's)")
    parser.add_argument("--skip-open-unmix", action="store_true")
    parser.add_argument("--cpu", action="store_true",
                        help="train and separate on the CPU even when a GPU is there")
    parser.add_argument("--fast", action="store_true",
                        help="smoke test: the fast data set, seconds of training, 4 s of audio")
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="run folders (default: a temporary folder)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from labkit.data import find_tracks, toy
    from labkit.oracles import report_data
    from labkit.vocals import (
        RECIPE,
        evaluate_vocals,
        evaluation_tracks,
        load_stems,
        train_spec_unet,
        vocals_report,
    )

    torch.set_num_threads(args.threads)
    from labkit.core import device as default_device

    device = torch.device("cpu") if args.cpu else default_device()
    progress = not args.no_progress
    load_start = os.getloadavg()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-spec-unet-"))
    preset = "fast" if args.fast else "full"
    root = toy.ensure(preset, progress=progress)
    train_songs = load_stems(find_tracks(root, split="train"))
    valid_songs = load_stems(find_tracks(root, split="valid"))
    tracks = evaluation_tracks(find_tracks(root, split="test"),
                               seconds=4.0 if args.fast else None)
    print(f"data: {len(train_songs)} train / {len(valid_songs)} valid songs, {len(tracks)} test "
          f"tracks ({preset}), {args.threads} threads, load average {load_start}", flush=True)

    config = dict(RECIPE)
    if args.width is not None:
        config["base_channels"] = args.width
    cpu_start = time.process_time()
    unet = train_spec_unet(workdir / "spec_unet", model_config=config, train_songs=train_songs,
                           valid_songs=valid_songs, minutes=args.minutes, device=device,
                           overwrite=True, progress=progress, tensorboard=False,
                           clock=args.clock)
    unet_cpu = time.process_time() - cpu_start
    print(f"Spec U-Net: {unet.steps} steps in {unet.seconds:.0f} s", flush=True)
    methods = {"Spec U-Net": unet.separator}
    info = {"Spec U-Net": {
        "config": config, "parameters": sum(p.numel() for p in unet.model.parameters()),
        "train_seconds": round(unet.seconds, 1), "train_cpu_seconds": round(unet_cpu, 1),
        "train_steps": unet.steps, "steps_per_second": round(unet.steps_per_second, 3),
        "settings": {"n_fft": 1024, "hop_length": 256, "patch_frames": 128, "batch_size": 8,
                     "lr": 1e-3, "loss": "masked L1 on magnitudes",
                     "separation": "128-frame chunks, 50 % overlap, mixture phase"}}}
    if not args.skip_open_unmix:
        oumx = train_open_unmix(train_songs, valid_songs, workdir / "open_unmix", args.minutes,
                                hidden_size=args.hidden_size, progress=progress,
                                batch_size=4 if args.fast else args.open_unmix_batch,
                                segment_seconds=2.0 if args.fast else args.open_unmix_seconds,
                                clock=args.clock, device=device)
        print(f"Open-Unmix: {oumx['steps']} steps in {oumx['seconds']:.0f} s", flush=True)
        methods["Open-Unmix"] = oumx["model"]
        info["Open-Unmix"] = {
            "parameters": oumx["parameters"], "train_seconds": round(oumx["seconds"], 1),
            "train_cpu_seconds": round(oumx["cpu_seconds"], 1), "train_steps": oumx["steps"],
            "steps_per_second": round(oumx["steps"] / oumx["seconds"], 3),
            "settings": oumx["settings"]}
    for name, model in methods.items():
        info[name]["inference_rtf"] = round(real_time_factor(model, tracks), 4)

    start = time.perf_counter()
    results = evaluate_vocals(methods, tracks, metrics=("sdr", "si_sdr"), progress=progress)
    eval_seconds = time.perf_counter() - start
    report = vocals_report(results)
    print(report)

    tables = {metric: report_data(by_method, sources=("vocals", "accompaniment"),
                                  metric_name=metric) for metric, by_method in results.items()}
    for name in results["sdr"]:
        info.setdefault(name, {})
        for metric, by_method in results.items():
            info[name][metric] = {k: round(v, 3) for k, v in by_method[name]["median"].items()}
    oracle_vocals = results["sdr"]["IRM2 oracle"]["median"]["vocals"]
    unet_vocals = results["sdr"]["Spec U-Net"]["median"]["vocals"]
    fraction = unet_vocals / oracle_vocals if oracle_vocals else math.nan
    done = {"spec_unet_vocals_sdr_over_oracle": round(fraction, 3),
            "at_least_60_percent_of_oracle": bool(fraction >= 0.6)}
    if "Open-Unmix" in results["sdr"]:
        done["open_unmix_vocals_sdr_over_oracle"] = round(
            results["sdr"]["Open-Unmix"]["median"]["vocals"] / oracle_vocals, 3)
        done["at_least_open_unmix"] = bool(
            unet_vocals >= results["sdr"]["Open-Unmix"]["median"]["vocals"])
    load_end = os.getloadavg()
    out = {
        "benchmark": "spectrogram U-Net (notebook 02) vs Open-Unmix at an equal CPU training "
                     "budget, vocals/accompaniment on toy-MUSDB test tracks",
        "command": "python benchmarks/spec_unet.py " + " ".join(argv if argv is not None
                                                                else sys.argv[1:]),
        "minutes_per_model": args.minutes,
        "budget_clock": ("wall time" if args.clock == "wall" else
                         "CPU time of the process / threads (emulates an idle machine's wall "
                         "time on a shared one; optimistic where the threads would idle)"),
        "data": {"preset": preset, "train_songs": len(train_songs),
                 "valid_songs": len(valid_songs), "test_tracks": len(tracks),
                 "test_seconds_each": round(tracks[0][1].shape[-1] / SR, 2),
                 "sample_rate": SR, "channels": 1},
        "metrics": {"sdr": "SDR, museval v4 (MUSDB convention): median over 1 s frames, "
                           "then median over tracks, dB",
                    "si_sdr": "SI-SDR, whole signal, median over tracks, dB",
                    "oracle": "IRM2 (|V|^2 / (|V|^2 + |A|^2)) with the U-Net's STFT, "
                              "1024/256 at 22.05 kHz"},
        "methods": info,
        "done_when": done,
        "tables": tables,
        "evaluation_seconds": round(eval_seconds, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "device": str(device),
                    "cpu_count": os.cpu_count(), "threads": args.threads,
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in load_end],
                    "note": "2 CPU cores shared with other jobs while measured: a load average "
                            "above 2 means fewer training steps in the budget than on a quiet "
                            "machine, so SDRs and speeds are pessimistic"},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
