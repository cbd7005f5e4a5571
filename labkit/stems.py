"""Four-stem separation with waveform U-Nets (notebook 03): training, evaluation, memory, CLI.

The pieces around :mod:`labkit.models.wave_unet`:

- :func:`stem_l1_loss` and :func:`stems_step`: the L1 loss on the four waveforms;
- :func:`segment_loaders`: random training segments (:class:`labkit.data.SegmentDataset`, stems
  remixed across songs, random gains) and fixed validation segments, at the model's rate;
- :func:`train_waveunet`: training on the shared :class:`labkit.train.Trainer` with a wall-clock
  budget, periodic checkpoints and ``resume`` (a path or ``"auto"``);
- :func:`evaluation_tracks`, :func:`evaluate_stems`, :func:`stems_report`: per-stem SDR (MUSDB
  convention) on the test split beside the IRM2 oracle and the do-nothing baseline;
- :func:`measure_training_memory`: peak memory of training steps, batch size x segment length;
- :func:`load_separator`, :func:`train_cli` and :func:`separate_cli`: ``labkit train waveunet``
  and ``labkit separate FILE``.

Rates: the course's model works at 22.05 kHz (:data:`RECIPE`); evaluation happens at the data's
rate (44.1 kHz for the built-in set): :func:`labkit.separate.separate` resamples the mixture for
the model and the stems back, and the IRM2 oracle uses a 4096/1024 STFT at 44.1 kHz, the setting
of the MUSDB18 papers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from labkit.errors import CheckpointError, DataError, LabkitError
from labkit.models.wave_unet import STEMS
from labkit.train import TrainResult

__all__ = [
    "DEFAULT_WORKDIR", "ORACLE_STFT", "RECIPE", "SDR_TITLE", "SEPARATOR_MODELS", "STEMS",
    "ChannelAdapter", "TrainResult", "build_separate_parser", "build_separator",
    "build_train_parser", "evaluate_stems", "evaluation_tracks", "load_separator", "mean_sdr",
    "measure_training_memory", "memory_table", "resolve_separator", "segment_loaders",
    "separate_cli", "separator_estimator", "stem_l1_loss", "stems_report", "stems_step",
    "train_cli", "train_waveunet",
]

RECIPE: dict[str, Any] = {
    "sources": list(STEMS), "channels": 2, "sample_rate": 22050, "filter_length": 512,
    "stride": 256, "n_filters": 512, "filterbank_init": "stft", "depth": 4, "width": 64,
    "growth": 1.5, "kernel_size": 5, "norm": "batch", "chunk_seconds": 8.0,
}
"""The course's WaveUNet (also :class:`~labkit.models.wave_unet.WaveUNet`'s defaults): 22.05 kHz
stereo, a 512-filter bank of 512 taps at hop 256 (23 ms / 11.6 ms) started as an STFT, and a
4-level U-Net of 64 -> 324 channels over its frames (4.2 M parameters). Chosen by measurement on
2 CPU cores: after 200 equal training steps a 128-channel U-Net and a 1024/512 filterbank were no
better, and each cost about 1.4 times as much per step."""

ORACLE_STFT = {"n_fft": 4096, "hop_length": 1024}
"""The IRM2 oracle's STFT at 44.1 kHz (as in the MUSDB18 papers)."""

DEFAULT_WORKDIR = Path("runs/03_wave_unet")
"""Where ``labkit train waveunet`` writes, and where ``labkit separate`` looks for a model."""

SEPARATOR_MODELS = ("wave_unet", "wave_unet_stoller")
"""Registered models :func:`load_separator` accepts."""


# ----------------------------------------------------------------------------------- loss
def stem_l1_loss(estimates: Tensor, targets: Tensor) -> Tensor:
    """Mean absolute error between estimated and true stems (a scalar tensor).

    ``estimates`` and ``targets``: ``(batch, sources, channels, samples)``; when the sample counts
    differ both are cropped to the shorter one (a model may return a few samples more or less).
    Other axes must agree.
    """
    if estimates.shape[:-1] != targets.shape[:-1]:
        raise LabkitError(f"stem_l1_loss: estimates {tuple(estimates.shape)} and targets "
                          f"{tuple(targets.shape)} must agree in (batch, sources, channels)")
    length = min(estimates.shape[-1], targets.shape[-1])
    return (estimates[..., :length] - targets[..., :length]).abs().mean()


def stems_step(model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device) -> Tensor:
    """The training step: ``batch = (mixture (batch, channels, samples), stems (batch, sources,
    channels, samples))`` -> the L1 loss of ``model(mixture)`` against the stems."""
    mixture, stems = batch
    return stem_l1_loss(model(mixture), stems)


# ----------------------------------------------------------------------------------- data
def segment_loaders(root: Any = None, *, segment_seconds: float = 2.0, batch_size: int = 8,
                    num_workers: int = 0, sample_rate: int = 22050, channels: int = 2,
                    samples_per_epoch: int = 2048, valid_segments: int = 4, songs: int | None = None,
                    seed: int = 0) -> tuple[Any, Any]:
    """Training and validation loaders of four-stem segments at ``sample_rate``.

    Training: :class:`labkit.data.SegmentDataset` over the ``train`` split of ``root`` (default
    the built-in set; ``songs`` keeps the first n): random ``segment_seconds`` segments, each
    stem from its own random song and offset with a random gain and channel swap (new segments
    every epoch of ``samples_per_epoch`` items). Validation: :class:`labkit.data.FixedSegments`,
    ``valid_segments`` evenly spread segments of each ``valid`` song. Batches: ``(mixture (batch,
    channels, samples), stems (batch, 4, channels, samples))``. ``num_workers`` DataLoader
    processes read the audio (0: in the training process, best on 2 cores).
    """
    from torch.utils.data import DataLoader

    from labkit.data import FixedSegments, SegmentDataset, find_tracks

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LabkitError(f"batch_size={batch_size!r}; expected a whole number >= 1")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise LabkitError(f"num_workers={num_workers!r}; expected a whole number >= 0")
    mono = channels == 1
    train = SegmentDataset(find_tracks(root, split="train", subset=songs),
                           segment_seconds=segment_seconds, samples_per_epoch=samples_per_epoch,
                           mono=mono, sample_rate=sample_rate, seed=seed)
    if len(train) < batch_size:
        raise DataError(f"samples_per_epoch={samples_per_epoch} is smaller than one batch of "
                        f"{batch_size}")
    try:
        valid_tracks = find_tracks(root, split="valid")
    except DataError:
        valid_tracks = None  # a set without a validation split trains without validation
    valid = None
    if valid_tracks and valid_segments:
        valid = DataLoader(FixedSegments(valid_tracks, segment_seconds=segment_seconds,
                                         max_per_track=valid_segments, mono=mono,
                                         sample_rate=sample_rate),
                           batch_size=batch_size, shuffle=False)
    loader = DataLoader(train, batch_size=batch_size, shuffle=False, drop_last=True,
                        num_workers=num_workers, persistent_workers=False)
    return loader, valid


# ----------------------------------------------------------------------------------- training


_UNLIMITED_STEPS = 10**7


def _adam_groups(model: nn.Module, lr: float, filterbank_lr: float
                 ) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
    """An optimizer factory for the Trainer: Adam at ``lr``, with the filterbank
    (``model.analysis`` and ``model.synthesis``, if any) at ``filterbank_lr`` times ``lr`` in a
    second group."""
    filterbank = {id(p) for name in ("analysis", "synthesis")
                  if isinstance(getattr(model, name, None), nn.Module)
                  for p in getattr(model, name).parameters()}

    def adam(parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        groups = [{"params": [p for p in parameters if id(p) not in filterbank]},
                  {"params": [p for p in parameters if id(p) in filterbank],
                   "lr": lr * filterbank_lr}]
        return torch.optim.Adam([g for g in groups if g["params"]], lr=lr)

    return adam


def build_separator(config: dict[str, Any] | None = None) -> nn.Module:
    """A fresh model from ``config`` (a :func:`labkit.models.model_config` dict, or keyword
    arguments of :class:`WaveUNet` without ``"name"``); default :data:`RECIPE`."""
    from labkit.models import build_model

    config = dict(RECIPE if config is None else config)
    if "name" not in config:
        config["name"] = "wave_unet"
    if config["name"] not in SEPARATOR_MODELS:
        raise LabkitError(f"model {config['name']!r} is not a waveform separator; use one of "
                          f"{', '.join(SEPARATOR_MODELS)}")
    return build_model(config)


def train_waveunet(workdir: str | Path, *, model: nn.Module | None = None,
                   model_config: dict[str, Any] | None = None, root: Any = None,
                   songs: int | None = None, segment_seconds: float = 2.0, batch_size: int = 8,
                   num_workers: int = 0, samples_per_epoch: int = 2048, valid_segments: int = 4,
                   minutes: float | None = None, max_steps: int | None = None, lr: float = 3e-3,
                   filterbank_lr: float = 0.1, anneal: bool = True, min_lr_ratio: float = 0.1,
                   ckpt_every: int = 100, log_every: int = 10, val_every: int | None = 200,
                   resume: str | Path | None = None, overwrite: bool = False,
                   device: str | torch.device | None = None, seed: int = 0,
                   threads: int | None = None, progress: bool = True,
                   tensorboard: bool | None = False,
                   callbacks: Sequence[Callable[[Any, str, dict[str, Any]], None]] = ()
                   ) -> TrainResult:
    """Train a four-stem waveform separator with the L1 stem loss on random segments.

    The model is ``model``, else built from ``model_config`` (default :data:`RECIPE`). Data: see
    :func:`segment_loaders` (``root``, ``songs``, ``segment_seconds``, ``batch_size``,
    ``num_workers``, ``samples_per_epoch``, ``valid_segments``), at the model's rate and channels.
    Stops after ``minutes`` of training wall time or ``max_steps`` steps, whichever comes first
    (give at least one). Adam at ``lr``, and at ``filterbank_lr`` x ``lr`` for a learned
    filterbank (so that it moves away from its STFT start slowly); with ``anneal`` the rates fall
    along a cosine to ``min_lr_ratio`` of themselves as the budget (time or steps, whichever runs
    out first) is spent. Mixed precision on CUDA (the Trainer's default). ``callbacks`` go to the
    Trainer (``(trainer, event, info)``, see :class:`labkit.train.Trainer`).
    Checkpoints in ``workdir`` (model, optimizer, step, epoch, scaler, config, manifest): every
    ``ckpt_every`` steps, ``best.pt`` at each validation (every ``val_every`` steps) that improves,
    ``final.pt`` at the end. ``resume="auto"`` continues the newest checkpoint of ``workdir`` (or
    starts), a path continues that checkpoint; ``overwrite`` deletes an earlier run. ``threads``
    sets torch's CPU threads during the run.
    """
    from labkit.checkpoint import load_checkpoint
    from labkit.core import device as default_device
    from labkit.core import fingerprint
    from labkit.train import TimeBudget, Trainer, budget_callbacks

    if minutes is None and max_steps is None:
        raise LabkitError("train_waveunet: give minutes or max_steps (or both) to say when to "
                          "stop")
    if minutes is not None and not minutes > 0:
        raise LabkitError(f"train_waveunet: minutes={minutes!r}; expected a positive number")
    if model is None:
        model = build_separator(model_config)
    rate, channels = int(model.sample_rate), int(model.channels)
    train_data, valid_data = segment_loaders(
        root, segment_seconds=segment_seconds, batch_size=batch_size, num_workers=num_workers,
        sample_rate=rate, channels=channels, samples_per_epoch=samples_per_epoch,
        valid_segments=valid_segments, songs=songs, seed=seed)
    files = [t.path for t in train_data.dataset.tracks]
    device = torch.device(device) if device is not None else default_device()
    optimizer = _adam_groups(model, lr, filterbank_lr)
    # Stop once the wall-clock budget is spent; lower the rates along a cosine to min_lr_ratio
    # of themselves over the budget (time or steps, whichever runs out first).
    budget = TimeBudget(60.0 * minutes, finish=False) if minutes is not None else None
    schedule = budget_callbacks(budget, max_steps, anneal, min_lr_ratio)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        trainer = Trainer(model, train_data, val_data=valid_data, step_fn=stems_step,
                          workdir=workdir, lr=lr, device=device,
                          optimizer=optimizer,
                          # a time budget alone still needs a step limit for the Trainer
                          max_steps=max_steps if max_steps is not None else _UNLIMITED_STEPS,
                          ckpt_every=ckpt_every, val_every=val_every if valid_data else None,
                          log_every=log_every, resume=resume, overwrite=overwrite, seed=seed,
                          tensorboard=tensorboard, progress=progress,
                          callbacks=[*schedule, *callbacks],
                          data_fingerprint=fingerprint(files))
        if minutes is not None and trainer.elapsed >= 60.0 * minutes:
            history = trainer.history  # a resumed run whose budget is already spent
        else:
            history = trainer.fit()
    finally:
        torch.set_num_threads(previous_threads)
    if minutes is not None and trainer.elapsed >= 60.0 * minutes and not (
            max_steps is not None and trainer.step >= max_steps):
        stopped_by = "budget"
    elif max_steps is not None and trainer.step >= max_steps:
        stopped_by = "max_steps"
    else:
        stopped_by = "stopped"
    if trainer.best_path.is_file():
        state = load_checkpoint(trainer.best_path, map_location=device)["model"]
        model.load_state_dict(state)
    model.eval()
    settings = {"segment_seconds": segment_seconds, "batch_size": batch_size,
                "num_workers": num_workers, "lr": lr, "filterbank_lr": filterbank_lr,
                "anneal": anneal, "min_lr_ratio": min_lr_ratio, "minutes": minutes,
                "max_steps": max_steps, "seed": seed, "device": str(device),
                "train_songs": len(files), "threads": threads or previous_threads}
    return TrainResult(model=model, history=dict(history), workdir=Path(workdir),
                       steps=trainer.step, seconds=trainer.elapsed, stopped_by=stopped_by,
                       settings=settings)


# ----------------------------------------------------------------------------------- models
def load_separator(path: str | Path, map_location: Any = "cpu") -> nn.Module:
    """A waveform separator from a checkpoint file or a run folder, in eval mode.

    A folder is resolved to its ``best.pt``, else ``final.pt``, else its newest checkpoint.
    Raises :class:`~labkit.errors.CheckpointError` naming the file for a missing or damaged file
    and for a checkpoint of a model that is not a four-stem waveform separator (see
    :data:`SEPARATOR_MODELS`).
    """
    from labkit.checkpoint import latest_checkpoint, load_checkpoint, load_model

    path = Path(path)
    if path.is_dir():
        found = next((p for p in (path / "best.pt", path / "final.pt") if p.is_file()), None)
        found = found or latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path} holds no checkpoint (no best.pt, final.pt or "
                                  "checkpoints/step_*.pt); train a model with `labkit train "
                                  "waveunet` or pass a checkpoint file")
        path = found
    checkpoint = load_checkpoint(path)
    name = checkpoint.get("model_name")
    if name not in SEPARATOR_MODELS:
        raise CheckpointError(
            f"{path} is a checkpoint of model {name!r}, which is not a waveform separator; "
            f"`labkit separate` needs a checkpoint of {' or '.join(map(repr, SEPARATOR_MODELS))} "
            "(written by `labkit train waveunet`)")
    return load_model(path, expected_model=name, map_location=map_location)


# ----------------------------------------------------------------------------------- evaluation
def evaluation_tracks(root: Any = None, split: str = "test", seconds: float | None = None,
                      subset: int | None = None, sample_rate: int | None = None
                      ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Tracks in memory for evaluation: ``(name, mixture (channels, samples), stems (4,
    channels, samples))`` float32 at the data's rate (or ``sample_rate``).

    ``root``: as in :func:`labkit.data.find_tracks` (default the built-in set); ``subset`` keeps
    the first n tracks, ``seconds`` the first seconds of each (museval-style scoring of whole
    songs is slow; a short excerpt is enough for a smoke test). The mixture is the sum of the
    stems.
    """
    from labkit.data import FullTracks, find_tracks

    data = FullTracks(find_tracks(root, split=split, subset=subset), sample_rate=sample_rate)
    out = []
    for name, mixture, stems in data:
        n = mixture.shape[-1]
        if seconds is not None:
            n = min(n, round(seconds * data.sample_rate))
        out.append((name, np.ascontiguousarray(mixture[..., :n].numpy()),
                    np.ascontiguousarray(stems[..., :n].numpy())))
    return out


def separator_estimator(model: nn.Module, sr: int, overlap: float = 0.25, batch_size: int = 1,
                        chunk_seconds: float | None = None
                        ) -> Callable[[np.ndarray], np.ndarray]:
    """``mixture (channels, samples) at sr -> stems (sources, channels, samples)`` through
    :func:`labkit.separate.separate` (the model's rate and chunks, ``overlap`` cross-faded)."""
    from labkit.separate import separate

    def estimate(mixture: np.ndarray) -> np.ndarray:
        return separate(model, mixture, sr, chunk_seconds=chunk_seconds, overlap=overlap,
                        batch_size=batch_size, progress=False)

    return estimate


SDR_TITLE = "SDR (museval v4 convention: median over 1 s frames, then over tracks)"


def evaluate_stems(estimators: dict[str, nn.Module | Callable[[np.ndarray], Any]],
                   tracks: Sequence[tuple[str, np.ndarray, np.ndarray]], sr: int = 44100, *,
                   oracle: bool = True, do_nothing: bool = True, backend: str = "direct",
                   n_fft: int = ORACLE_STFT["n_fft"],
                   hop_length: int = ORACLE_STFT["hop_length"], progress: bool = True
                   ) -> dict[str, dict[str, Any]]:
    """Per-stem SDR of separators on ``tracks`` beside the IRM2 oracle and do-nothing.

    ``estimators``: name -> a separation model (run through :func:`separator_estimator`) or a
    function ``mixture (channels, samples) -> (4, channels, samples)``. ``tracks``: from
    :func:`evaluation_tracks`, at ``sr`` Hz. The oracle is the IRM2 mask of an ``n_fft`` /
    ``hop_length`` STFT at ``sr`` (4096/1024 at 44.1 kHz by default).

    SDR: the MUSDB convention (BSSEval v4 images SDR on 1 s frames, median over frames, then over
    tracks) via :func:`labkit.metrics.sdr`; ``backend="direct"`` computes museval's numbers in
    milliseconds, ``"museval"`` calls museval itself (slow).

    Returns ``{method: {"metric", "oracle", "per_track", "median", "seconds"}}`` (the format of
    :func:`labkit.oracles.evaluate_tracks`, plus the separation time); :func:`stems_report` makes
    the table.
    """
    from tqdm.auto import tqdm

    from labkit.metrics import aggregate, sdr
    from labkit.oracles import do_nothing as do_nothing_fn
    from labkit.oracles import oracle_separation

    if not tracks:
        raise LabkitError("evaluate_stems: no tracks; pass what evaluation_tracks() returns")
    methods: dict[str, tuple[Callable[..., Any], bool]] = {}
    for name, estimator in estimators.items():
        function = separator_estimator(estimator, sr) if isinstance(estimator, nn.Module) \
            else estimator
        methods[name] = (function, False)
    if oracle:
        methods["IRM2 oracle"] = (lambda mixture, stems: oracle_separation(
            stems, "irm2", n_fft=n_fft, hop_length=hop_length), True)
    if do_nothing:
        methods["do-nothing"] = (lambda mixture: do_nothing_fn(mixture, len(STEMS)), False)
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(methods) * len(tracks), desc="evaluating", disable=not progress)
    with bar:
        for method, (function, uses_reference) in methods.items():
            per_track: dict[str, dict[str, float]] = {}
            seconds = 0.0
            for name, mixture, stems in tracks:
                start = time.perf_counter()
                estimates = function(mixture, stems) if uses_reference else function(mixture)
                seconds += time.perf_counter() - start
                estimates = np.asarray(estimates, dtype=np.float32)
                if estimates.shape != stems.shape:
                    raise LabkitError(f"{method} returned shape {estimates.shape} for track "
                                      f"{name!r}; expected the stems' shape {stems.shape}")
                values = sdr(stems, estimates, sr=sr, backend=backend)
                per_track[name] = {s: float(v) for s, v in zip(STEMS, values)}
                bar.update()
            results[method] = {"metric": SDR_TITLE, "oracle": uses_reference,
                               "per_track": per_track,
                               "median": aggregate(list(per_track.values())),
                               "seconds": seconds}
    return results


def stems_report(results: dict[str, dict[str, Any]], reference: str = "IRM2 oracle",
                 floor: str = "do-nothing") -> str:
    """The markdown table of :func:`evaluate_stems` results: stems, mean, share of the oracle."""
    from labkit.oracles import separation_report

    return separation_report(results, sources=STEMS, metric_name=SDR_TITLE,
                             reference=reference, floor=floor)


def mean_sdr(result: dict[str, Any]) -> float:
    """The mean over the four stems of one method's median SDRs (NaN ignored)."""
    values = [v for v in result["median"].values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


# ----------------------------------------------------------------------------------- memory
_MEMORY_WORKER = """
import json, resource, sys, time
import torch
from labkit.models import build_model
from labkit.stems import stems_step
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model = build_model(args["config"])
optimizer = torch.optim.Adam(model.parameters(), 1e-3)
samples = round(args["seconds"] * model.sample_rate)
batch = (torch.randn(args["batch"], model.channels, samples) * 0.1,
         torch.randn(args["batch"], len(model.sources), model.channels, samples) * 0.05)
before = peak_mb()
start = time.perf_counter()
for _ in range(args["steps"]):
    optimizer.zero_grad(set_to_none=True)
    loss = stems_step(model, batch, torch.device("cpu"))
    loss.backward()
    optimizer.step()
seconds = (time.perf_counter() - start) / args["steps"]
print(json.dumps({"before_mb": before, "peak_mb": peak_mb(), "step_seconds": seconds}))
"""


def measure_training_memory(batch_sizes: Sequence[int], segment_seconds: Sequence[float],
                            model_config: dict[str, Any] | None = None, steps: int = 2,
                            threads: int = 1, timeout: float = 300.0, progress: bool = True
                            ) -> list[dict[str, float]]:
    """Peak memory of CPU training steps for each batch size x segment length.

    Each combination runs in a fresh Python process (so that one measurement's freed memory
    cannot hide the next one's): the model of ``model_config`` (default :data:`RECIPE`) and Adam
    are built, ``steps`` training steps run on random data, and the process reports its peak
    resident set size (Linux ``VmHWM``). Returns one row per combination: ``batch_size``,
    ``segment_seconds``, ``audio_seconds`` (batch x segment), ``peak_mb`` (the whole process:
    Python, torch, the model), ``before_mb`` (after building the model and the batch),
    ``training_mb`` (peak minus before: what the steps themselves added, mostly activations kept
    for the backward pass) and ``step_seconds``.
    """
    from tqdm.auto import tqdm

    config = dict(RECIPE if model_config is None else model_config)
    config.setdefault("name", "wave_unet")
    combos = [(int(b), float(s)) for b in batch_sizes for s in segment_seconds]
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for batch, seconds in tqdm(combos, desc="measuring memory", disable=not progress):
        args = json.dumps({"config": config, "batch": batch, "seconds": seconds,
                           "steps": int(steps), "threads": int(threads)})
        try:
            done = subprocess.run([sys.executable, "-c", _MEMORY_WORKER, args], env=env,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise LabkitError(f"measuring batch {batch} x {seconds} s took over {timeout} s; "
                              "use smaller sizes or a longer timeout") from err
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise LabkitError(f"measuring batch {batch} x {seconds} s failed (exit status "
                              f"{done.returncode}): {' / '.join(tail)}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"batch_size": batch, "segment_seconds": seconds,
                     "audio_seconds": batch * seconds, "peak_mb": round(report["peak_mb"], 1),
                     "before_mb": round(report["before_mb"], 1),
                     "training_mb": round(report["peak_mb"] - report["before_mb"], 1),
                     "step_seconds": round(report["step_seconds"], 3)})
    return rows


def memory_table(rows: Sequence[dict[str, float]]) -> str:
    """A markdown table of :func:`measure_training_memory` rows."""
    header = ("| batch | segment (s) | audio per step (s) | peak RSS (MB) | added by training "
              "(MB) | step (s) |")
    lines = [header, "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch_size']} | {r['segment_seconds']:g} | {r['audio_seconds']:g} "
                     f"| {r['peak_mb']:.0f} | {r['training_mb']:.0f} | {r['step_seconds']:.2f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- CLI
def build_train_parser(prog: str = "labkit train waveunet") -> argparse.ArgumentParser:
    """The options of ``labkit train waveunet``."""
    p = argparse.ArgumentParser(
        prog=prog, description="Train the waveform U-Net of notebook 03 to separate vocals, "
        "drums, bass and other (L1 loss on the waveforms, random segments). Checkpoints go to "
        "--workdir; a run that was stopped or killed continues with --resume auto.")
    p.add_argument("--data-root", default=None,
                   help="data set folder in the MUSDB18(-HQ) layout, or 'musdb' for "
                        "$MUSDB_PATH (default: the built-in toy-MUSDB set, generated on first "
                        "use)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"run folder for checkpoints, history and manifest (default: "
                        f"{DEFAULT_WORKDIR})")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="continue a run: 'auto' (the newest checkpoint in --workdir, or start "
                        "if there is none) or a checkpoint file")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run in --workdir and start again")
    p.add_argument("--model", choices=SEPARATOR_MODELS, default="wave_unet",
                   help="wave_unet (masking U-Net, the course's) or wave_unet_stoller")
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget in wall-clock minutes (default 15 when --max-steps is "
                        "not given)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--segment-seconds", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--lr", type=float, default=3e-3,
                   help="Adam learning rate at the start (it falls along a cosine to a tenth of "
                        "itself as the budget is spent; default 3e-3)")
    p.add_argument("--ckpt-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between history entries")
    p.add_argument("--val-every", type=int, default=200, help="steps between validations")
    p.add_argument("--songs", type=int, default=None, help="train on the first N songs")
    p.add_argument("--width", type=int, default=None, help="channels of the first U-Net level")
    p.add_argument("--depth", type=int, default=None, help="U-Net levels")
    p.add_argument("--mono", action="store_true", help="a mono model (default stereo)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA is there")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate", action="store_true",
                   help="after training, score the model on the test split beside the IRM2 "
                        "oracle and do-nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.model == "wave_unet":
        config = {"name": "wave_unet", **RECIPE}
        for key in ("width", "depth"):
            if getattr(args, key) is not None:
                config[key] = getattr(args, key)
    else:
        if args.width is not None or args.depth is not None:
            raise LabkitError("--width and --depth set the wave_unet model; wave_unet_stoller "
                              "uses its own defaults")
        config = {"name": "wave_unet_stoller"}
    if args.mono:
        config["channels"] = 1
    return config


def train_cli(argv: Sequence[str] | None = None) -> int:
    """Run ``labkit train waveunet`` with ``argv``; returns the exit status."""
    args = build_train_parser().parse_args(argv)
    minutes = args.minutes if args.minutes is not None or args.max_steps is not None else 15.0
    start = time.perf_counter()
    result = train_waveunet(
        args.workdir, model=build_separator(_config_from_args(args)), root=args.data_root,
        songs=args.songs, segment_seconds=args.segment_seconds, batch_size=args.batch_size,
        num_workers=args.num_workers, minutes=minutes, max_steps=args.max_steps, lr=args.lr,
        ckpt_every=args.ckpt_every, log_every=args.log_every, val_every=args.val_every,
        resume=args.resume, overwrite=args.overwrite, device="cpu" if args.cpu else None,
        seed=args.seed, threads=args.threads, progress=not args.no_progress)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s "
          f"({result.steps_per_second:.2f} steps/s, stopped by {result.stopped_by}); run folder "
          f"{result.workdir} ({time.perf_counter() - start:.0f} s in all)", flush=True)
    if args.evaluate:
        tracks = evaluation_tracks(args.data_root)
        results = evaluate_stems({"WaveUNet": result.model}, tracks,
                                 sr=_test_rate(args.data_root), progress=not args.no_progress)
        print(stems_report(results))
    return 0


def _test_rate(root: Any) -> int:
    from labkit.data import find_tracks

    return find_tracks(root, split="test")[0].sample_rate


def build_separate_parser(prog: str = "labkit separate") -> argparse.ArgumentParser:
    """The options of ``labkit separate``."""
    p = argparse.ArgumentParser(
        prog=prog, description="Separate an audio file (WAV, FLAC, OGG, MP3, ...; any sample "
        "rate and channel count) into vocals, drums, bass and other with a trained waveform "
        "U-Net, writing OUT/<name>_separated/<name>_<stem>.wav at the file's rate and channels. "
        "On failure no output file is left behind.")
    p.add_argument("file", type=Path, help="the audio file to separate")
    p.add_argument("--model", default=None, metavar="CKPT",
                   help=f"a checkpoint file or run folder (e.g. from `labkit train waveunet`) "
                        f"or a shipped model name (default: the shipped default separator, else "
                        f"the run in {DEFAULT_WORKDIR})")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: the input file's folder)")
    p.add_argument("--stems", nargs="+", default=None, metavar="STEM",
                   help="write only these stems (default: all four)")
    p.add_argument("--chunk-seconds", type=float, default=None,
                   help="model chunk length (default: the model's)")
    p.add_argument("--overlap", type=float, default=0.25,
                   help="overlap of neighbouring chunks as a fraction of a chunk (default 0.25)")
    p.add_argument("--batch-size", type=int, default=1, help="chunks per model call")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is there")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class ChannelAdapter(nn.Module):
    """Run a separator on audio with another number of channels, one channel at a time.

    :func:`labkit.separate.separate` converts only mono <-> N channels; a 3-channel (or 5.1) file
    and a stereo model need this adapter: each input channel is separated on its own as a mono
    signal (fed to every channel of ``model``; the model's output channels are averaged), so no
    channel is mixed into another. ``channels`` is the audio's channel count; ``sample_rate``,
    ``sources``, ``chunk_seconds`` and ``valid_length`` are the model's.

    ``forward``: ``(batch, channels, samples)`` -> ``(batch, sources, channels, samples)``.
    """

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.model = model
        self.channels = int(channels)
        self.sample_rate = model.sample_rate
        self.sources = tuple(model.sources)
        if getattr(model, "chunk_seconds", None):
            self.chunk_seconds = model.chunk_seconds
        if hasattr(model, "valid_length"):
            self.valid_length = model.valid_length

    def forward(self, mixture: Tensor) -> Tensor:
        """Separate each channel of ``mixture`` ``(batch, channels, samples)`` on its own."""
        batch, channels, samples = mixture.shape
        mono = mixture.reshape(batch * channels, 1, samples)
        stems = self.model(mono.expand(-1, self.model.channels, -1)).mean(dim=2)
        return stems.reshape(batch, channels, len(self.sources), samples).transpose(1, 2)


def _default_model_path() -> str | Path:
    """What ``labkit separate`` uses without ``--model``: the shipped default separator if there
    is one, else the run in :data:`DEFAULT_WORKDIR`."""
    from labkit.pretrained import default_model

    try:
        return default_model("separate")
    except LabkitError:
        pass
    if DEFAULT_WORKDIR.is_dir():
        return DEFAULT_WORKDIR
    raise CheckpointError(f"no --model given, no shipped default model and no run in "
                          f"{DEFAULT_WORKDIR}: train one with `labkit train waveunet`, or pass "
                          "--model CKPT (a checkpoint file, a run folder or a shipped name)")


def resolve_separator(model: str | Path | None = None, device: Any = "cpu") -> nn.Module:
    """The separation model ``labkit separate --model`` names: a checkpoint file, a run folder
    (its ``best.pt``, else its newest checkpoint), a shipped model name, or None (the shipped
    default, else the run in :data:`DEFAULT_WORKDIR`). Raises
    :class:`~labkit.errors.CheckpointError` for a missing or damaged file and for a model that
    does not follow the separation protocol (``sample_rate``, ``channels``, ``sources``)."""
    from labkit.pretrained import resolve_model

    name = _default_model_path() if model is None else model
    separator = resolve_model(name, task="separate", device=device)
    missing = [a for a in ("sample_rate", "channels", "sources") if not hasattr(separator, a)]
    if missing:
        raise CheckpointError(
            f"{name}: its model {type(separator).__name__} is not a separator (it lacks "
            f"{', '.join(missing)}); `labkit separate` needs a checkpoint of a separation model, "
            f"e.g. from `labkit train waveunet` ({' or '.join(SEPARATOR_MODELS)})")
    return separator


def separate_cli(argv: Sequence[str] | None = None) -> int:
    """Run ``labkit separate`` with ``argv``; returns the exit status."""
    from labkit.audio import info
    from labkit.core import device as default_device
    from labkit.errors import AudioError
    from labkit.separate import separate_file

    args = build_separate_parser().parse_args(argv)
    if not args.file.is_file():
        raise AudioError(f"'{args.file}': no such file; give the path of an audio file")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu") if args.cpu else default_device()
    model = resolve_separator(args.model, device=device)
    channels = info(args.file).channels
    if channels > 2 and channels != model.channels:
        model = ChannelAdapter(model, channels)
    start = time.perf_counter()
    written = separate_file(args.file, model, out_dir=args.out, stems=args.stems,
                            progress=not args.no_progress, chunk_seconds=args.chunk_seconds,
                            overlap=args.overlap, batch_size=args.batch_size, device=device)
    for stem, path in written.items():
        print(f"{stem}: {path}")
    print(f"separated in {time.perf_counter() - start:.1f} s", flush=True)
    return 0
