"""Vocal separation with the spectrogram U-Net (notebook 02): data, training, evaluation.

The pieces around :mod:`labkit.models.spec_unet`:

- :func:`load_stems` reads tracks once into memory as mono ``(vocals, accompaniment)`` at the
  working rate (22.05 kHz: half the bins of 44.1 kHz for the same window length in time, and
  training steps stay fast on a CPU);
- :class:`VocalPatches` draws training patches from them: ``128`` STFT frames of the mixture and
  the vocals (magnitudes), or the waveforms (for models with their own front-end);
- :func:`train_spec_unet` trains on the shared :class:`labkit.train.Trainer` with the masked L1
  loss (a wall-clock budget, epochs or steps; best, final and periodic checkpoints);
- :func:`mean_mask_trace` records the mean mask during a few steps (the collapse of the
  unnormalised network);
- :func:`evaluate_vocals` scores a separator on whole test tracks beside the IRM2 oracle (same
  STFT) and the do-nothing baseline, in museval SDR and SI-SDR.

``labkit train specunet`` (see :func:`cli_main`) runs the training from a terminal.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from labkit.errors import DataError, LabkitError
from labkit.models.spec_unet import SpecUNet, SpecUNetSeparator, masked_l1_loss
from labkit.train import TimeBudget, TrainResult

__all__ = [
    "HOP_LENGTH", "N_FFT", "PATCH_FRAMES", "RECIPE", "SAMPLE_RATE", "SOURCES", "BudgetStop",
    "TrainResult", "VocalPatches", "cli_main", "evaluate_vocals", "evaluation_tracks",
    "load_stems", "magnitude_patch", "mean_mask_trace", "separator_estimator", "spec_unet_step",
    "train_spec_unet", "vocals_report",
]

SAMPLE_RATE = 22050
"""The working rate of notebook 02 (the built-in set is 44.1 kHz; tracks are resampled on load)."""
N_FFT = 1024
HOP_LENGTH = 256
PATCH_FRAMES = 128
"""Training patches: 128 frames of a 1024-point STFT with hop 256 (1.5 s at 22.05 kHz)."""
SOURCES = ("vocals", "accompaniment")

RECIPE: dict[str, Any] = {"levels": 4, "base_channels": 16, "kernel_size": 5, "norm": "batch",
                          "log_input": True}
"""The working U-Net of notebook 02: the practical's 4 levels at half its width (16 -> 128), with
batch norm (without it the mask collapses) and log-compressed input. On 2 CPU cores a step takes
about a third of the time of the 32 -> 256 network's, and in the course's calibration on simpler
synthetic songs 10 minutes of it reached a higher vocal SDR (0.73 x the IRM2 oracle's, against
0.66 x). The built-in toy-MUSDB set is harder: see ``benchmarks/results/spec_unet.json``."""


# --------------------------------------------------------------------------------------- data
def load_stems(tracks: Sequence[Any], sample_rate: int = SAMPLE_RATE,
               progress: bool = False) -> list[np.ndarray]:
    """Read ``tracks`` (from :func:`labkit.data.find_tracks`) into memory as mono
    ``(vocals, accompaniment)`` float32 arrays ``(2, samples)`` at ``sample_rate``.

    Resampling once here instead of in every training item keeps the steps fast.
    """
    from tqdm.auto import tqdm

    from labkit.data import FullTracks

    if not tracks:
        raise DataError("load_stems: no tracks given; pass the list find_tracks(...) returns")
    data = FullTracks(tracks, targets=SOURCES, mono=True, sample_rate=sample_rate)
    return [np.ascontiguousarray(targets[:, 0].numpy()) for _, _, targets
            in tqdm(data, desc="loading tracks", disable=not progress)]


def magnitude_patch(audio: Tensor, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> Tensor:
    """STFT magnitude ``(..., n_fft // 2 + 1, frames)`` of ``audio`` ``(..., samples)``."""
    from labkit.spectral import stft

    return stft(audio, n_fft=n_fft, hop_length=hop_length).abs()


class VocalPatches(Dataset):
    """Random training patches from songs held in memory (see :func:`load_stems`).

    Item ``i`` of epoch ``e`` depends only on ``(seed, e, i)`` (call :meth:`set_epoch`; the
    Trainer does), so runs can be repeated and resumed. Per item: a random song and offset for the
    vocals and, with ``random_mix``, another random song and offset for the accompaniment (new
    mixtures the model has never heard, the standard augmentation); each part is scaled by a gain
    drawn uniformly from ``gain`` (None: no gain). ``samples_per_epoch`` items make an epoch
    (default: as many patches as fit into the songs).

    ``output="magnitude"``: ``(mixture, vocals)`` magnitudes ``(1, bins, frames)`` of a
    ``n_fft``/``hop_length`` STFT, ``frames`` frames (segments of ``(frames - 1) * hop_length``
    samples). ``output="waveform"``: the waveforms ``(1, samples)`` of segments of
    ``segment_samples`` samples (default the same length), for models with their own STFT.
    """

    def __init__(self, songs: Sequence[np.ndarray], frames: int = PATCH_FRAMES,
                 n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                 samples_per_epoch: int | None = None, random_mix: bool = True,
                 gain: tuple[float, float] | None = (0.5, 1.25), seed: int = 0,
                 output: str = "magnitude", segment_samples: int | None = None) -> None:
        self.songs = [np.asarray(s, dtype=np.float32) for s in songs]
        if not self.songs:
            raise DataError("VocalPatches: no songs given; pass load_stems(tracks)")
        for i, song in enumerate(self.songs):
            if song.ndim != 2 or song.shape[0] != 2:
                raise DataError(f"VocalPatches: song {i} has shape {song.shape}; expected "
                                "(2, samples): vocals and accompaniment (see load_stems)")
        if output not in ("magnitude", "waveform"):
            raise DataError(f"VocalPatches: output={output!r}; use 'magnitude' or 'waveform'")
        if gain is not None and not 0 <= gain[0] <= gain[1]:
            raise DataError(f"VocalPatches: gain={gain}; expected (low, high) with 0 <= low <= "
                            "high, or None")
        self.frames, self.n_fft, self.hop_length = int(frames), int(n_fft), int(hop_length)
        self.output = output
        self.segment = int(segment_samples or (self.frames - 1) * self.hop_length)
        if self.segment < 1:
            raise DataError(f"VocalPatches: segments of {self.segment} samples; expected >= 1")
        if samples_per_epoch is None:
            samples_per_epoch = max(1, sum(s.shape[-1] for s in self.songs) // self.segment)
        if samples_per_epoch < 1:
            raise DataError(f"VocalPatches: samples_per_epoch={samples_per_epoch}; expected >= 1")
        self.samples_per_epoch = int(samples_per_epoch)
        self.random_mix = bool(random_mix)
        self.gain = gain
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches of epoch ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _cut(self, rng: np.random.Generator, part: int) -> np.ndarray:
        song = self.songs[int(rng.integers(len(self.songs)))][part]
        start = int(rng.integers(max(song.shape[-1] - self.segment, 0) + 1))
        piece = song[start:start + self.segment]
        if piece.shape[-1] < self.segment:  # a song shorter than a segment: zero-pad
            piece = np.pad(piece, (0, self.segment - piece.shape[-1]))
        return piece

    def waveforms(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` as waveforms: ``(mixture (samples,), vocals (samples,))``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside [0, {len(self)})")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.random_mix:
            vocals, accompaniment = self._cut(rng, 0), self._cut(rng, 1)
        else:
            song = self.songs[int(rng.integers(len(self.songs)))]
            start = int(rng.integers(max(song.shape[-1] - self.segment, 0) + 1))
            vocals, accompaniment = (np.pad(p, (0, self.segment - p.shape[-1]))
                                     for p in song[:, start:start + self.segment])
        gains = rng.uniform(*self.gain, size=2) if self.gain is not None else (1.0, 1.0)
        vocals = (vocals * np.float32(gains[0])).astype(np.float32)
        accompaniment = (accompaniment * np.float32(gains[1])).astype(np.float32)
        return vocals + accompaniment, vocals

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        mixture, vocals = (torch.from_numpy(x)[None] for x in self.waveforms(index))
        if self.output == "waveform":
            return mixture, vocals
        return (magnitude_patch(mixture, self.n_fft, self.hop_length),
                magnitude_patch(vocals, self.n_fft, self.hop_length))


def spec_unet_step(model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device) -> Tensor:
    """The training step: ``batch = (mixture, vocals)`` magnitudes ``(batch, 1, bins, frames)``;
    returns the masked L1 loss ``mean |model(mixture) * mixture - vocals|``."""
    mixture, vocals = batch
    return masked_l1_loss(model(mixture), mixture, vocals)


# ----------------------------------------------------------------------------------- training


_UNBOUNDED_EPOCHS = 10**9  # the Trainer needs a stopping rule; with a budget the clock stops it


BudgetStop = TimeBudget
"""The wall-clock (or per-thread CPU) training budget of :func:`train_spec_unet`: see
:class:`labkit.train.TimeBudget` (it ends the run as reaching ``max_steps`` would)."""


def _split_tracks(root: Any, songs: int | None, split: str) -> list[Any]:
    from labkit.data import find_tracks

    return find_tracks(root, split=split, subset=songs)


def train_spec_unet(workdir: str | Path, *, model: SpecUNet | None = None,
                    model_config: dict[str, Any] | None = None, root: Any = None,
                    songs: int | None = None, train_songs: Sequence[np.ndarray] | None = None,
                    valid_songs: Sequence[np.ndarray] | None = None,
                    minutes: float | None = None, max_steps: int | None = None,
                    epochs: int | None = None, batch_size: int = 8, lr: float = 1e-3,
                    device: str | torch.device | None = None, seed: int = 0,
                    valid_patches: int = 64, val_every: int = 100, ckpt_every: int = 200,
                    log_every: int = 5, resume: str | None = None, overwrite: bool = False,
                    tensorboard: bool | None = None, progress: bool = True,
                    threads: int | None = None, clock: str = "wall", anneal: bool = False,
                    min_lr_ratio: float = 0.0,
                    callbacks: Sequence[Callable[[Any, str, dict[str, Any]], None]] = ()
                    ) -> TrainResult:
    """Train a spectrogram U-Net to estimate vocals with the masked L1 loss; see the module doc.

    The model is ``model``, else ``SpecUNet(**model_config)``, else ``SpecUNet(**RECIPE)``. Data:
    ``train_songs`` / ``valid_songs`` from :func:`load_stems`, else the ``train`` and ``valid``
    splits of ``root`` (default: the built-in set; ``songs`` keeps the first n training songs).
    Stops after ``minutes`` of training (wall clock), ``max_steps`` or ``epochs``, whichever
    comes first (at least one of them). One epoch is as many 128-frame patches as fit into the
    training songs. ``device``: default :func:`labkit.device` (``"cpu"`` forces the CPU);
    ``threads`` sets torch's CPU threads for the run; ``clock="process"`` measures ``minutes`` in
    CPU time per thread instead of wall time (see :class:`BudgetStop`). Checkpoints go to
    ``workdir`` (best by validation loss every ``val_every`` steps, final, periodic every
    ``ckpt_every``); the history also to TensorBoard when it is installed (``tensorboard=None``).
    ``resume="auto"`` continues an interrupted run. ``anneal`` lowers the learning rate along a
    cosine to ``min_lr_ratio`` x ``lr`` as the budget (``minutes`` and/or ``max_steps``) is
    spent (:class:`labkit.train.CosineToBudget`). ``callbacks`` go to the Trainer.
    """
    from labkit.core import device as default_device
    from labkit.train import Trainer, budget_callbacks

    if minutes is None and max_steps is None and epochs is None:
        raise LabkitError("train_spec_unet: give minutes, max_steps or epochs to say when to stop")
    if minutes is not None and not minutes > 0:
        raise LabkitError(f"train_spec_unet: minutes={minutes!r}; expected a positive number")
    if anneal and minutes is None and max_steps is None:
        raise LabkitError("train_spec_unet: anneal=True needs minutes or max_steps (the budget "
                          "to anneal over)")
    if train_songs is None:
        train_songs = load_stems(_split_tracks(root, songs, "train"), progress=progress)
    if valid_songs is None:
        valid_songs = load_stems(_split_tracks(root, None, "valid"), progress=progress)
    if model is None:
        model = SpecUNet(**(model_config if model_config is not None else RECIPE))
    train_data = DataLoader(VocalPatches(train_songs, seed=seed), batch_size=batch_size,
                            shuffle=False, drop_last=True)
    if len(train_data) == 0:
        raise DataError(f"train_spec_unet: the training songs give fewer patches than one batch "
                        f"of {batch_size}; use a smaller batch_size or more songs")
    valid = VocalPatches(valid_songs, samples_per_epoch=valid_patches, random_mix=False,
                         gain=None, seed=seed + 1)
    valid_data = DataLoader(valid, batch_size=batch_size, shuffle=False)
    device = torch.device(device) if device is not None else default_device()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    budget = BudgetStop(60.0 * minutes, clock) if minutes is not None else None
    schedule = budget_callbacks(budget, max_steps, anneal, min_lr_ratio)
    try:
        only_budget = max_steps is None and epochs is None
        trainer = Trainer(model, train_data, val_data=valid_data, step_fn=spec_unet_step,
                          workdir=workdir, max_steps=max_steps,
                          epochs=_UNBOUNDED_EPOCHS if only_budget else epochs, lr=lr,
                          device=device, ckpt_every=ckpt_every, val_every=val_every,
                          log_every=log_every, resume=resume, overwrite=overwrite, seed=seed,
                          tensorboard=tensorboard, progress=progress,
                          callbacks=[*schedule, *callbacks])
        if only_budget:
            trainer.total_steps = None  # the clock decides: no step total for the progress bar
        history = trainer.fit()
    finally:
        torch.set_num_threads(previous_threads)
    if budget is not None and budget.fired:
        stopped_by = "budget"
    elif max_steps is not None and trainer.step >= max_steps:
        stopped_by = "max_steps"
    else:
        stopped_by = "epochs"
    if trainer.best_path.is_file():
        from labkit.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(trainer.best_path, map_location=device)["model"])
    model.eval()
    settings = {"model": dict(model_config_of(model)), "batch_size": batch_size, "lr": lr,
                "minutes": minutes, "max_steps": max_steps, "epochs": epochs, "seed": seed,
                "anneal": anneal, "min_lr_ratio": min_lr_ratio if anneal else None,
                "train_songs": len(train_songs), "device": str(device)}
    return TrainResult(model=model, separator=SpecUNetSeparator.from_unet(model),
                       history=dict(history), workdir=Path(workdir), steps=trainer.step,
                       seconds=trainer.elapsed, stopped_by=stopped_by, settings=settings)


def model_config_of(model: nn.Module) -> dict[str, Any]:
    """The registry config of ``model`` (see :func:`labkit.models.model_config`)."""
    from labkit.models import model_config

    return model_config(model)


def mean_mask_trace(model: SpecUNet, batches: Sequence[tuple[Tensor, Tensor]], steps: int,
                    workdir: str | Path | None = None, lr: float = 1e-3,
                    seed: int = 0) -> list[float]:
    """Train ``model`` for ``steps`` steps on ``batches`` (cycled) with the masked L1 loss and
    return the mean of its mask at each step (before that step's update).

    ``batches``: ``(mixture, vocals)`` magnitudes ``(batch, 1, bins, frames)``. Shows in a few
    seconds whether the mask collapses towards 0 (the unnormalised practical network) or stays
    alive. Uses the shared Trainer on the CPU; its run folder is ``workdir`` (default: a
    temporary folder, deleted afterwards).
    """
    import tempfile

    from labkit.train import Trainer

    means: list[float] = []

    def recording_step(model: nn.Module, batch: tuple[Tensor, Tensor],
                       device: torch.device) -> Tensor:
        mixture, vocals = batch
        mask = model(mixture)
        means.append(float(mask.detach().mean()))
        return masked_l1_loss(mask, mixture, vocals)

    with tempfile.TemporaryDirectory(prefix="labkit-mask-trace-") as scratch:
        trainer = Trainer(model, list(batches), step_fn=recording_step,
                          workdir=workdir if workdir is not None else scratch, max_steps=steps,
                          lr=lr, device="cpu", log_every=1, overwrite=True, seed=seed,
                          progress=False, tensorboard=False)
        trainer.fit()
    return means


# --------------------------------------------------------------------------------- evaluation
def evaluation_tracks(tracks: Sequence[Any], seconds: float | None = None,
                      sample_rate: int = SAMPLE_RATE) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Test tracks in memory: ``(name, mixture (1, samples), targets (2, 1, samples))`` mono at
    ``sample_rate`` (targets: vocals, accompaniment), the first ``seconds`` of each if given."""
    from labkit.data import FullTracks

    out = []
    for name, mixture, targets in FullTracks(tracks, targets=SOURCES, mono=True,
                                             sample_rate=sample_rate):
        n = mixture.shape[-1] if seconds is None else min(mixture.shape[-1],
                                                           round(seconds * sample_rate))
        out.append((name, mixture[..., :n].numpy(), targets[..., :n].numpy()))
    return out


def separator_estimator(separator: nn.Module, sr: int = SAMPLE_RATE, overlap: float = 0.5,
                        batch_size: int = 8) -> Callable[[np.ndarray], np.ndarray]:
    """``mixture (channels, samples) -> estimates (sources, channels, samples)`` through
    :func:`labkit.separate.separate` (chunks of the separator's ``chunk_seconds``, ``overlap``
    cross-faded)."""
    from labkit.separate import separate

    def estimate(mixture: np.ndarray) -> np.ndarray:
        return separate(separator, mixture, sr, overlap=overlap, batch_size=batch_size,
                        progress=False)

    return estimate


def evaluate_vocals(estimators: dict[str, Callable[[np.ndarray], Any] | nn.Module],
                    tracks: Sequence[tuple[str, np.ndarray, np.ndarray]] | None = None,
                    *, metrics: Sequence[str] = ("sdr", "si_sdr"), oracle: bool = True,
                    do_nothing: bool = True, sample_rate: int = SAMPLE_RATE,
                    n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                    progress: bool = True, backend: str = "museval"
                    ) -> dict[str, dict[str, Any]]:
    """Score separators on test tracks beside the IRM2 oracle and the do-nothing baseline.

    ``estimators``: name -> a Separator module (run through :func:`labkit.separate.separate`
    with 50 % overlap) or a function ``mixture (1, samples) -> (2, 1, samples)`` (vocals,
    accompaniment). ``tracks``: from :func:`evaluation_tracks` (default: every test track of the
    built-in set). The oracle is the IRM2 mask with the same STFT as the model (``n_fft``,
    ``hop_length`` at ``sample_rate``). ``metrics``: ``"sdr"`` (museval, the MUSDB convention:
    median over 1 s frames, then over tracks; ``backend="direct"`` computes museval's numbers
    without museval, in milliseconds), ``"si_sdr"``, ``"sdr_fast"`` (whole signal).

    Returns ``{metric: {method: evaluate_tracks result}}``; :func:`vocals_report` makes tables.
    """
    from labkit.oracles import do_nothing as do_nothing_fn
    from labkit.oracles import evaluate_tracks
    from labkit.oracles import oracle as oracle_fn

    if tracks is None:
        from labkit.data import find_tracks

        tracks = evaluation_tracks(find_tracks(split="test"), sample_rate=sample_rate)
    methods: dict[str, Callable[..., Any]] = {}
    for name, estimator in estimators.items():
        methods[name] = (separator_estimator(estimator, sample_rate)
                         if isinstance(estimator, nn.Module) else estimator)
    if oracle:
        methods["IRM2 oracle"] = oracle_fn("irm2", n_fft=n_fft, hop_length=hop_length)
    if do_nothing:
        methods["do-nothing"] = lambda mixture: do_nothing_fn(mixture, len(SOURCES))
    results: dict[str, dict[str, Any]] = {metric: {} for metric in metrics}
    for name, method in methods.items():
        # separate once per method and track, then score those estimates with every metric
        uses_reference = getattr(method, "uses_reference", False) is True
        estimates = [method(mixture, targets) if uses_reference else method(mixture)
                     for _, mixture, targets in tracks]
        for metric in metrics:
            replay = iter(estimates)
            results[metric][name] = evaluate_tracks(
                tracks, lambda mixture, _r=replay: next(_r), metric=metric, sr=sample_rate,
                sources=SOURCES, progress=progress, backend=backend)
            results[metric][name]["oracle"] = uses_reference
    return results


METRIC_TITLES = {
    "sdr": "SDR (museval v4: median over 1 s frames, then over tracks)",
    "si_sdr": "SI-SDR (whole signal, median over tracks)",
    "sdr_fast": "SDR (fast-bss-eval, whole signal, median over tracks)",
}


def vocals_report(results: dict[str, dict[str, Any]], reference: str = "IRM2 oracle",
                  floor: str = "do-nothing") -> str:
    """Markdown tables (one per metric) of :func:`evaluate_vocals` results, each method's mean
    also as a fraction of the oracle's."""
    from labkit.oracles import separation_report

    return "\n\n".join(
        separation_report(by_method, sources=SOURCES, metric_name=METRIC_TITLES.get(metric, metric),
                          reference=reference, floor=floor)
        for metric, by_method in results.items())


# ---------------------------------------------------------------------------------------- CLI
def build_cli_parser(prog: str = "labkit train specunet") -> argparse.ArgumentParser:
    """The options of ``labkit train specunet``."""
    p = argparse.ArgumentParser(
        prog=prog, description="Train the spectrogram U-Net of notebook 02 to separate vocals "
        "(masked L1 loss on 1024/256 STFT magnitudes at 22.05 kHz), then optionally evaluate it "
        "on the test tracks beside the IRM2 oracle and the do-nothing baseline.")
    p.add_argument("--workdir", type=Path, default=Path("runs/02_spec_unet"),
                   help="save folder for checkpoints, history and manifest "
                        "(default: runs/02_spec_unet)")
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget in wall-clock minutes")
    p.add_argument("--epochs", type=int, default=None, help="stop after this many epochs")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--songs", type=int, default=None,
                   help="train on the first N training songs (default: all)")
    p.add_argument("--root", default=None,
                   help="data set folder (default: the built-in toy-MUSDB; 'musdb' reads "
                        "MUSDB_PATH)")
    p.add_argument("--levels", type=int, default=RECIPE["levels"])
    p.add_argument("--width", type=int, default=RECIPE["base_channels"],
                   help="channels of the first encoder level (doubling per level)")
    p.add_argument("--no-batch-norm", action="store_true",
                   help="the practical's network without normalisation (its mask collapses)")
    p.add_argument("--valid-patches", type=int, default=64,
                   help="validation patches (from the validation songs) for best.pt")
    p.add_argument("--val-every", type=int, default=100, help="validate every N steps")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA is there")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run in --workdir and start again")
    p.add_argument("--evaluate", action="store_true",
                   help="after training, evaluate on the test tracks and print the tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Run ``labkit train specunet`` with ``argv``; returns the exit status."""
    args = build_cli_parser().parse_args(argv)
    if args.minutes is None and args.epochs is None and args.steps is None:
        args.minutes = 10.0
    config = {**RECIPE, "levels": args.levels, "base_channels": args.width}
    if args.no_batch_norm:
        config["norm"] = None
    start = time.perf_counter()
    result = train_spec_unet(
        args.workdir, model_config=config, root=args.root, songs=args.songs,
        minutes=args.minutes, max_steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, device="cpu" if args.cpu else None,
        seed=args.seed, valid_patches=args.valid_patches, val_every=args.val_every,
        resume="auto" if args.resume else None, overwrite=args.overwrite,
        progress=not args.no_progress, threads=args.threads)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s "
          f"({result.steps_per_second:.2f} steps/s, stopped by {result.stopped_by}); "
          f"run folder {result.workdir} ({time.perf_counter() - start:.0f} s in all)")
    if args.evaluate:
        from labkit.data import find_tracks

        tracks = evaluation_tracks(find_tracks(args.root, split="test"))
        results = evaluate_vocals({"Spec U-Net": result.separator}, tracks,
                                  progress=not args.no_progress)
        print(vocals_report(results))
    return 0

