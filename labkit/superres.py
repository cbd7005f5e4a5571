"""Audio super-resolution with a conditional diffusion model (notebook 05): the whole recipe.

Bandwidth extension restores the high band of band-limited audio. Here the input is sampled at a
quarter of the output rate (11.025 kHz -> 44.1 kHz: 4x) or otherwise low-passed; the model is
:class:`labkit.models.diffusion.SuperResDiffusion`. This module holds what surrounds it:

- **degradations** (:func:`lowpass`, :func:`mp3_roundtrip`, :func:`degrade`): Butterworth,
  Chebyshev, elliptic and brick-wall low-passes at cutoffs of 0.2-0.3 x Nyquist, a real MP3
  round trip, and the exact 4x case (soxr down to 11.025 kHz); each signal is then decimated to
  a rate that keeps its band and resampled back up, which is the model's condition;
- **data** (:class:`SuperResSegments`, :func:`find_audio`): random segments of the high-rate
  target with a random degradation built on the fly (or fixed ``low`` files), from a folder
  ``root/train/high/*.wav`` (optional ``root/train/low/``) or the built-in toy-MUSDB mixtures;
- **configuration** (:func:`load_config`): YAML with ``data``, ``model``, ``train`` and
  ``inference`` sections; defaults in ``labkit/configs/superres.yaml``;
- **training** (:func:`train_superres`) on the shared :class:`labkit.train.Trainer`, with a
  wall-clock budget;
- **inference** (:class:`Upsampler`, :func:`upsample`, :func:`upsample_file`): chunks with
  overlap and cross-fade (from :mod:`labkit.separate`), so files of any length run in bounded
  memory; loudness normalised in and restored out; silence stays silence. The low band the input
  has is kept exactly: the model only fills the bins above the input's cutoff (found with
  :func:`estimate_cutoff`), and Griffin-Lim finds their phase with the known bins held fixed;
- **evaluation** (:func:`evaluate`): LSD (:func:`labkit.metrics.lsd`, bels, eps 1e-10, full band
  and high band) and SNR for the model, soxr resampling and the band-limited input;
- **panels** for the notebook (:func:`inference_panel`, :func:`training_panel`) and the
  ``labkit upsample`` / ``labkit train superres`` command lines.

Audio is float32 channels-first ``(channels, samples)`` as everywhere in labkit.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from labkit.errors import AudioError, DataError, LabkitError
from labkit.train import TimeBudget
from labkit.train import TrainResult as BaseTrainResult

__all__ = [
    "DEFAULT_CONFIG_PATH", "FILTERS", "KINDS", "LSD_EPS", "SuperResSegments", "TrainResult",
    "Upsampler", "budget_callback", "build_model_from_config", "cli_train_main",
    "cli_upsample_main", "degrade", "estimate_cutoff", "evaluate", "find_audio",
    "inference_panel", "load_config", "load_upsampler", "lowpass", "make_trainer",
    "mp3_roundtrip", "random_degradation", "summarize", "superres_step", "train_superres",
    "training_panel", "upsample", "upsample_file",
]

FILTERS = ("butter", "cheby1", "ellip", "brickwall")
"""Low-pass filter kinds of :func:`lowpass`."""
KINDS = ("soxr", *FILTERS, "mp3")
"""Degradation kinds of :func:`degrade`."""
LSD_EPS = 1e-10
"""The eps of every LSD reported here (labkit.metrics.lsd's default), fixed across methods."""
_SILENCE_RMS = 1e-7  # below this (-140 dBFS) a chunk is treated as silence
_MP3_RATE = 22050
_MP3_LEVEL = 0.9  # soundfile's compression level: about 25 kbps at 22.05 kHz, band ~5-6 kHz

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "superres.yaml"
"""The shipped defaults (package data ``labkit/configs/superres.yaml``)."""


# =========================================================================== configuration
def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LabkitError(f"config {path}: cannot read it ({exc})") from exc
    except yaml.YAMLError as exc:
        raise LabkitError(f"config {path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LabkitError(f"config {path}: expected sections data/model/train/inference, got a "
                          f"{type(data).__name__}")
    return data


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``base`` with ``update`` merged in, section by section; unknown keys are errors."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise LabkitError(f"{where}: unknown key {key!r}; known keys: {', '.join(base)}")
        if isinstance(base[key], dict) and key != "degradations":
            if not isinstance(value, Mapping):
                raise LabkitError(f"{where}.{key}: expected a mapping, got {value!r}")
            out[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The super-resolution config: the shipped defaults, updated by the YAML file at ``path``
    and then by ``overrides`` (a nested dict, e.g. ``{"train": {"minutes": 2}}``).

    Sections ``data``, ``model``, ``train``, ``inference`` (see ``labkit/configs/superres.yaml``
    for every key). Unknown keys raise :class:`~labkit.errors.LabkitError` naming them.
    """
    config = _read_yaml(DEFAULT_CONFIG_PATH)
    if path is not None:
        config = _merge(config, _read_yaml(Path(path)), str(path))
    if overrides:
        config = _merge(config, overrides, "overrides")
    data = config["data"]
    if data["sample_rate"] < 2 * data["low_rate"]:
        raise LabkitError(f"config: data.sample_rate={data['sample_rate']} must be at least "
                          f"twice data.low_rate={data['low_rate']}")
    unknown = set(data["degradations"]) - set(KINDS)
    if unknown:
        raise LabkitError(f"config: data.degradations has unknown kinds {sorted(unknown)}; use "
                          f"{', '.join(KINDS)}")
    return config


def build_model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """A new :class:`~labkit.models.diffusion.SuperResDiffusion` from a config's ``data`` and
    ``model`` sections."""
    from labkit.models.diffusion import SuperResDiffusion

    settings = dict(config["model"])
    settings["dilations"] = list(settings["dilations"])
    return SuperResDiffusion(sample_rate=int(config["data"]["sample_rate"]),
                             low_rate=int(config["data"]["low_rate"]), **settings)


# =========================================================================== degradations
def _as_array(audio: Any, name: str = "audio") -> np.ndarray:
    from labkit.audio import validate

    validate(audio, name=name)
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    return np.asarray(audio, dtype=np.float32)


def lowpass(audio: Any, sr: int, cutoff_hz: float, kind: str = "butter",
            order: int = 8) -> np.ndarray:
    """Low-pass ``audio`` ``(..., samples)`` at ``cutoff_hz``; returns float32, same shape.

    ``kind``: ``"butter"`` (Butterworth, -3 dB at the cutoff), ``"cheby1"`` (Chebyshev I, 0.5 dB
    ripple), ``"ellip"`` (elliptic, 0.5 dB ripple, 80 dB stop band), each of ``order`` and applied
    forwards and backwards (zero phase, so the known band stays aligned with the target), or
    ``"brickwall"`` (every FFT bin above the cutoff set to zero).
    """
    from scipy import signal

    x = _as_array(audio)
    if not 0 < cutoff_hz < sr / 2:
        raise LabkitError(f"cutoff_hz={cutoff_hz!r}: expected a frequency in (0, {sr / 2}) Hz")
    if kind == "brickwall":
        spectrum = np.fft.rfft(x.astype(np.float64), axis=-1)
        spectrum[..., np.fft.rfftfreq(x.shape[-1], 1 / sr) > cutoff_hz] = 0
        return np.fft.irfft(spectrum, n=x.shape[-1], axis=-1).astype(np.float32)
    designs = {
        "butter": lambda: signal.butter(order, cutoff_hz, fs=sr, output="sos"),
        "cheby1": lambda: signal.cheby1(order, 0.5, cutoff_hz, fs=sr, output="sos"),
        "ellip": lambda: signal.ellip(order, 0.5, 80.0, cutoff_hz, fs=sr, output="sos"),
    }
    if kind not in designs:
        raise LabkitError(f"kind={kind!r}: use one of {', '.join(FILTERS)}")
    padlen = min(x.shape[-1] - 1, 3 * (2 * len(designs[kind]()) + 1))
    return signal.sosfiltfilt(designs[kind](), x, axis=-1, padlen=padlen).astype(np.float32)


def _delay(reference: np.ndarray, delayed: np.ndarray, max_lag: int) -> int:
    """The lag (samples) by which ``delayed`` trails ``reference`` (1-D), by cross-correlation."""
    n = reference.shape[-1] + delayed.shape[-1]
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(delayed, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.concatenate([corr[:max_lag + 1], corr[-max_lag:]])
    index = int(np.argmax(lags))
    return index if index <= max_lag else index - len(lags)


def mp3_roundtrip(audio: Any, sr: int, level: float = _MP3_LEVEL,
                  codec_rate: int = _MP3_RATE) -> np.ndarray:
    """Encode ``audio`` ``(channels, samples)`` as MP3 and decode it again (soundfile/LAME).

    The audio is resampled to ``codec_rate`` first; ``level`` is soundfile's compression level
    (0.9 at 22.05 kHz: about 25 kbps, the encoder keeps roughly 5-6 kHz). The decoded signal is
    realigned (the encoder adds ~1100 samples of delay) and resampled back to ``sr``. Returns
    float32 of the input's shape.
    """
    import soundfile as sf

    from labkit.audio import resample

    x = _as_array(audio)
    one_d = x.ndim == 1
    x = x[None] if one_d else x
    low = resample(x, sr, codec_rate)
    buffer = io.BytesIO()
    sf.write(buffer, low.T, codec_rate, format="MP3", subtype="MPEG_LAYER_III",
             compression_level=level, bitrate_mode="CONSTANT")
    buffer.seek(0)
    decoded = sf.read(buffer, dtype="float32", always_2d=True)[0].T
    lag = _delay(low.mean(0), decoded.mean(0), max_lag=min(4096, low.shape[-1] - 1))
    aligned = np.zeros_like(low)
    part = decoded[:, max(lag, 0):max(lag, 0) + low.shape[-1]]
    aligned[:, :part.shape[-1]] = part
    out = resample(aligned, codec_rate, sr)[:, :x.shape[-1]]
    out = np.pad(out, ((0, 0), (0, x.shape[-1] - out.shape[-1])))
    return out[0] if one_d else out


def _decimation_rate(cutoff_hz: float) -> int:
    """The rate that keeps a band up to ``cutoff_hz`` (soxr passes ~91 % of its Nyquist)."""
    return int(2 * math.ceil(cutoff_hz / 0.91))


def degrade(audio: Any, sr: int, kind: str = "soxr", cutoff_hz: float | None = None,
            low_rate: int = 11025) -> np.ndarray:
    """The band-limited version of ``audio`` ``(..., samples)`` at ``sr``, resampled back to ``sr``.

    ``kind="soxr"``: the exact 4x case, soxr down to ``low_rate`` and back (``cutoff_hz`` unused).
    A filter kind (:data:`FILTERS`): :func:`lowpass` at ``cutoff_hz``, then down to the lowest
    rate that keeps the band and back up. ``"mp3"``: :func:`mp3_roundtrip`, down to ``low_rate``
    and back (MP3 keeps ~5-6 kHz). Returns float32 of the input's shape.
    """
    from labkit.audio import resample

    x = _as_array(audio)
    if kind == "soxr":
        rate = low_rate
    elif kind == "mp3":
        x, rate = mp3_roundtrip(x, sr), low_rate
    elif kind in FILTERS:
        if cutoff_hz is None:
            raise LabkitError(f"degrade(kind={kind!r}) needs cutoff_hz")
        x, rate = lowpass(x, sr, cutoff_hz, kind), min(_decimation_rate(cutoff_hz), sr)
    else:
        raise LabkitError(f"kind={kind!r}: use one of {', '.join(KINDS)}")
    if rate >= sr:
        return x
    back = resample(resample(x, sr, rate), rate, sr)
    if back.shape[-1] >= x.shape[-1]:
        return np.ascontiguousarray(back[..., :x.shape[-1]])
    return np.pad(back, [(0, 0)] * (x.ndim - 1) + [(0, x.shape[-1] - back.shape[-1])])


def random_degradation(rng: np.random.Generator, weights: Mapping[str, float],
                       sample_rate: int, cutoff_range: Sequence[float]) -> dict[str, Any]:
    """Draw ``{"kind": ..., "cutoff_hz": ...}``: a kind by ``weights`` and, for filters, a cutoff
    uniformly in ``cutoff_range`` (fractions of ``sample_rate / 2``)."""
    kinds = [k for k, w in weights.items() if w > 0]
    if not kinds:
        raise LabkitError(f"degradation weights {dict(weights)} select nothing")
    p = np.array([weights[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    low, high = cutoff_range
    cutoff = float(rng.uniform(low, high) * sample_rate / 2) if kind in FILTERS else None
    return {"kind": kind, "cutoff_hz": cutoff}


# =========================================================================== data
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def find_audio(root: str | os.PathLike | None = None, split: str = "train"
               ) -> list[tuple[Path, Path | None]]:
    """Training files as ``(high, low or None)`` pairs, sorted.

    ``root=None``: the built-in toy-MUSDB mixtures (:func:`labkit.data.toy.ensure`, fast or full
    by fast mode; ``split`` "train", "valid" or "test" as in :func:`labkit.data.find_tracks`).
    A folder: ``root/<split>/high/*`` (WAV, FLAC, OGG, MP3, AIFF) with optional
    ``root/<split>/low/<same name>`` (any rate; missing ones are degraded on the fly). A
    "valid" split without its own folder holds out every 5th training file.
    """
    if root is None:
        from labkit.data import find_tracks, toy

        tracks = find_tracks(toy.ensure("auto", progress=False), split=split)
        return [(t.path / "mixture.wav", None) for t in tracks]
    root = Path(root).expanduser()
    folder = root / split / "high"
    if not folder.is_dir():
        if split == "valid" and (root / "train" / "high").is_dir():
            return find_audio(root, "train")[::5]
        raise DataError(f"{folder} does not exist: put the high-rate files in {root}/{split}/high/ "
                        "(and optionally their band-limited versions in low/ with the same names)")
    highs = sorted(p for p in folder.iterdir() if p.suffix.lower() in _AUDIO_SUFFIXES)
    if not highs:
        raise DataError(f"{folder} holds no audio files ({', '.join(_AUDIO_SUFFIXES)})")
    if split == "train" and not (root / "valid" / "high").is_dir() and len(highs) >= 5:
        highs = [p for i, p in enumerate(highs) if i % 5]  # every 5th file is the valid split
    low_dir = root / split / "low"
    pairs = []
    for high in highs:
        low = low_dir / high.name if (low_dir / high.name).is_file() else None
        pairs.append((high, low))
    return pairs


class SuperResSegments(torch.utils.data.Dataset):
    """Random training examples ``(target, condition)``, each float32 ``(1, samples)``.

    ``files``: ``(high, low)`` pairs from :func:`find_audio`. An example is a random segment of
    ``segment_seconds`` of a random file (a random channel or the mid of stereo files) at
    ``sample_rate``; its condition is the ``low`` file's segment resampled to ``sample_rate`` when
    there is one, else a :func:`random_degradation` of the target (``degradations`` weights,
    ``cutoff_range``). Both are scaled by one gain that sets the condition's RMS to a level drawn
    from ``level_db``. The draw depends only on ``(seed, epoch, index)`` (:meth:`set_epoch`), so a
    resumed training run sees the same data; ``fixed=True`` ignores the epoch (validation).
    """

    def __init__(self, files: Sequence[tuple[Path, Path | None]], sample_rate: int = 44100,
                 low_rate: int = 11025, segment_seconds: float = 1.0,
                 examples_per_epoch: int = 1024,
                 degradations: Mapping[str, float] | None = None,
                 cutoff_range: Sequence[float] = (0.2, 0.3),
                 level_db: Sequence[float] = (-34.0, -14.0), seed: int = 0,
                 fixed: bool = False) -> None:
        import soundfile as sf

        if not files:
            raise DataError("SuperResSegments: no files")
        self.files = [(Path(h), None if lo is None else Path(lo)) for h, lo in files]
        self.sample_rate, self.low_rate = int(sample_rate), int(low_rate)
        self.segment = max(1, round(segment_seconds * sample_rate))
        self.examples_per_epoch = int(examples_per_epoch)
        self.degradations = dict(degradations or {"soxr": 1.0})
        self.cutoff_range, self.level_db = tuple(cutoff_range), tuple(level_db)
        self.seed, self.fixed, self.epoch = seed, fixed, 0
        self.infos = []
        for high, low in self.files:
            try:
                self.infos.append(sf.info(str(high)))
            except (RuntimeError, sf.LibsndfileError) as exc:
                raise DataError(f"{high}: cannot read it as audio ({exc})") from exc
            if low is not None and not low.is_file():
                raise DataError(f"{low} does not exist")

    def __len__(self) -> int:
        return self.examples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of examples for ``epoch`` (ignored when ``fixed``)."""
        self.epoch = epoch

    def _read(self, path: Path, start_s: float, seconds: float) -> np.ndarray:
        from labkit.audio import load

        return load(path, sr=self.sample_rate, offset=start_s, duration=seconds)[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng((self.seed, epoch, index))
        file_index = int(rng.integers(len(self.files)))
        high, low = self.files[file_index]
        info = self.infos[file_index]
        seconds = self.segment / self.sample_rate
        start = float(rng.uniform(0, max(info.duration - seconds, 0.0)))
        target = self._read(high, start, seconds)
        channel_choice = int(rng.integers(target.shape[0] + 1))
        pick = (lambda a: a.mean(0, keepdims=True)) if channel_choice == target.shape[0] else (
            lambda a: a[min(channel_choice, a.shape[0] - 1)][None])
        target = _fit(pick(target), self.segment)
        if low is not None:
            condition = _fit(pick(self._read(low, start, seconds)), self.segment)
        else:
            spec = random_degradation(rng, self.degradations, self.sample_rate,
                                      self.cutoff_range)
            condition = degrade(target, self.sample_rate, spec["kind"], spec["cutoff_hz"],
                                self.low_rate)
        rms = float(np.sqrt(np.mean(condition.astype(np.float64) ** 2)))
        if rms > _SILENCE_RMS:
            gain = 10 ** (rng.uniform(*self.level_db) / 20) / rms
            target, condition = target * gain, condition * gain
        return (torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(condition, dtype=np.float32)))


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[-1])))


# =========================================================================== training
def superres_step(cond_dropout: float = 0.1) -> Callable[[nn.Module, Any, torch.device], Tensor]:
    """The Trainer's ``step_fn`` for a batch ``(target, condition)`` ``(batch, 1, samples)``:
    STFT features of both (:meth:`SuperResDiffusion.features`), then the diffusion loss with
    conditioning dropout ``cond_dropout`` (:meth:`SuperResDiffusion.loss`)."""
    def superres_loss(model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        target, condition = batch
        x0, _ = model.features(target[:, 0])
        _, cond = model.features(condition[:, 0])
        return model.loss(x0, cond, cond_dropout=cond_dropout)

    return superres_loss


@dataclass
class TrainResult(BaseTrainResult):
    """What :func:`train_superres` returns: :class:`labkit.train.TrainResult` (``model`` with the
    best weights by validation loss, in eval mode; ``history``, ``workdir``, ``steps``,
    ``seconds``, ``stopped_by``: "budget", "max_steps", "stopped", ...) plus ``config`` and
    ``checkpoint`` (the file holding ``model``: ``best.pt``, or the newest checkpoint before any
    validation)."""

    config: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None


def budget_callback(seconds: float) -> Callable[[Any, str, dict[str, Any]], None]:
    """A Trainer callback that asks the run to stop once ``seconds`` of training have passed
    (a wall-clock :class:`labkit.train.TimeBudget` that stops after the current step)."""
    return TimeBudget(seconds, "wall", finish=False)


def _datasets(config: Mapping[str, Any]) -> tuple[SuperResSegments, SuperResSegments]:
    data, train = config["data"], config["train"]
    common = {"sample_rate": data["sample_rate"], "low_rate": data["low_rate"],
              "segment_seconds": data["segment_seconds"], "degradations": data["degradations"],
              "cutoff_range": data["cutoff_range"], "level_db": data["level_db"]}
    train_set = SuperResSegments(find_audio(data["root"], "train"),
                                 examples_per_epoch=max(train["batch_size"] * 100, 1),
                                 seed=train["seed"], **common)
    valid_set = SuperResSegments(find_audio(data["root"], "valid"),
                                 examples_per_epoch=train["val_examples"], seed=train["seed"] + 1,
                                 fixed=True, **common)
    return train_set, valid_set


def _one_thread(_worker: int) -> None:
    """DataLoader workers prepare data on one thread each (the model has the others)."""
    torch.set_num_threads(1)


def make_trainer(config: Mapping[str, Any], workdir: str | Path, *, model: nn.Module | None = None,
                 progress: bool = True, callbacks: Sequence[Callable] = (),
                 resume: str | None = "auto", overwrite: bool = False,
                 max_steps: int | None = None) -> Any:
    """A :class:`labkit.train.Trainer` for the config's data, model and training settings
    (``max_steps`` overrides ``train.max_steps``; the minutes budget is added by
    :func:`train_superres`). ``model`` defaults to :func:`build_model_from_config`."""
    from torch.utils.data import DataLoader

    from labkit.train import Trainer

    train = config["train"]
    model = model if model is not None else build_model_from_config(config)
    train_set, valid_set = _datasets(config)
    steps = max_steps if max_steps is not None else train["max_steps"]
    if steps is None and train["minutes"] is None:
        raise LabkitError("train: give train.minutes or train.max_steps (or both)")
    workers = int(train.get("num_workers") or 0)
    loader = {"batch_size": train["batch_size"], "shuffle": False, "num_workers": workers,
              "worker_init_fn": _one_thread if workers else None}
    return Trainer(
        model, DataLoader(train_set, **loader), val_data=DataLoader(valid_set, **loader),
        step_fn=superres_step(train["cond_dropout"]), workdir=workdir,
        max_steps=steps if steps is not None else 10**9, lr=train["lr"],
        grad_clip=train["grad_clip"],
        val_every=train["val_every"], ckpt_every=train["val_every"], log_every=5,
        resume=resume, overwrite=overwrite, seed=train["seed"], progress=progress,
        tensorboard=False, callbacks=list(callbacks))


def train_superres(workdir: str | Path, config: Mapping[str, Any] | None = None, *,
                   minutes: float | None = None, max_steps: int | None = None,
                   model: nn.Module | None = None, progress: bool = True,
                   callbacks: Sequence[Callable] = (), resume: str | None = "auto",
                   overwrite: bool = False) -> TrainResult:
    """Train a super-resolution diffusion model; see the module docstring.

    ``config`` defaults to :func:`load_config`; ``minutes`` and ``max_steps`` override its
    ``train`` section (training stops at whichever comes first). ``train.threads`` sets torch's
    CPU threads for the run. Checkpoints go to ``workdir`` (``best.pt`` by validation loss,
    ``final.pt``, periodic ones); ``resume="auto"`` continues a run found there (a finished run
    returns at once). Returns a :class:`TrainResult` with the best weights loaded.
    """
    from labkit.checkpoint import latest_checkpoint, load_checkpoint

    config = copy.deepcopy(dict(config) if config is not None else load_config())
    if minutes is not None:
        config["train"]["minutes"] = minutes
    budget = config["train"]["minutes"]
    callbacks = list(callbacks) + ([budget_callback(60.0 * budget)] if budget else [])
    threads = config["train"].get("threads")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        trainer = make_trainer(config, workdir, model=model, progress=progress,
                               callbacks=callbacks, resume=resume, overwrite=overwrite,
                               max_steps=max_steps)
        # a run resumed after its budget was spent is finished: use it as it is
        spent = budget and trainer.elapsed >= 60.0 * budget
        history = trainer.history if spent else trainer.fit()
    finally:
        torch.set_num_threads(previous)
    model = trainer.model
    checkpoint = latest_checkpoint(workdir)
    if trainer.best_path.is_file():
        checkpoint = trainer.best_path
        model.load_state_dict(load_checkpoint(checkpoint)["model"])
    stopped_by = ("budget" if budget and trainer.elapsed >= 60.0 * budget else
                  "max_steps" if trainer.step >= trainer.max_steps else "stopped")
    return TrainResult(model=model.eval(), history=dict(history), workdir=Path(workdir),
                       steps=trainer.step, seconds=trainer.elapsed, stopped_by=stopped_by,
                       config=config, checkpoint=checkpoint)


# =========================================================================== inference
def estimate_cutoff(audio: Any, sr: int, n_fft: int = 2048, margin_db: float = 30.0,
                    knee_db: float = 6.0) -> float:
    """The frequency (Hz) where the band of band-limited ``audio`` ``(..., samples)`` ends.

    From the long-term power spectrum (mean over frames and channels, ``n_fft`` Hann STFT,
    smoothed over 5 bins): the *cliff* is the highest bin more than ``margin_db`` above the floor
    (the median level of the quietest 5 % of bins); band-limited audio falls by 80 dB or more
    there, natural spectra do not. The cutoff is the *knee* below the cliff: the highest bin
    still within ``knee_db`` of the band's level just below (the median over 60-80 % of the cliff
    frequency), i.e. about where a low-pass filter's response is down by ``knee_db``. A full-band
    signal gives (about) ``sr / 2``; silence gives ``sr / 2``.
    """
    power = _mean_power(_as_array(audio), n_fft)
    return _cutoff_from_power(power, sr, margin_db, knee_db)


def _mean_power(audio: np.ndarray, n_fft: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(audio.reshape(-1, audio.shape[-1]), np.float32))
    if x.shape[-1] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[-1]))
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), center=True,
                      return_complex=True)
    return (spec.abs() ** 2).double().mean(dim=(0, 2)).numpy()


def _cutoff_from_power(power: np.ndarray, sr: int, margin_db: float = 30.0,
                       knee_db: float = 6.0) -> float:
    bins = power.shape[0]
    level = 10 * np.log10(power + 1e-30)
    smooth = np.convolve(np.pad(level, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    floor = float(np.median(np.sort(smooth)[: max(1, bins // 20)]))
    if smooth.max() - floor < margin_db:  # silence or white noise: no cutoff to find
        return sr / 2
    cliff = int(np.flatnonzero(smooth > floor + margin_db).max())
    band = smooth[int(0.6 * cliff):max(int(0.8 * cliff), int(0.6 * cliff) + 1)]
    within = np.flatnonzero(smooth[:cliff + 1] >= np.median(band) - knee_db)
    knee = int(within.max()) if len(within) else cliff
    return float(min(knee + 1, bins - 1) * sr / (2 * (bins - 1)))


class Upsampler:
    """A trained :class:`~labkit.models.diffusion.SuperResDiffusion` with its inference settings.

    ``steps`` (DDIM), ``guidance_scale``, ``eta``, ``griffin_lim_iters``, ``seed``, ``method``
    ("ddim", or "ddpm" for every timestep). :meth:`process` restores one chunk; :func:`upsample`
    and :func:`upsample_file` run it over whole signals in chunks, on ``threads`` torch threads
    (default 1: the tensors of one chunk are small, and on a shared 2-core machine two threads
    made inference about 7x slower, measured; None keeps torch's setting).
    """

    def __init__(self, model: nn.Module, steps: int = 25, guidance_scale: float = 1.5,
                 eta: float = 0.0, griffin_lim_iters: int = 16, seed: int = 0,
                 method: str = "ddim", threads: int | None = 1) -> None:
        self.model = model.eval()
        self.steps, self.guidance_scale, self.eta = steps, guidance_scale, eta
        self.griffin_lim_iters, self.seed = griffin_lim_iters, seed
        self.method, self.threads = method, threads
        self.sample_rate = int(model.sample_rate)

    def split_bin(self, cutoff_hz: float) -> int:
        """The first STFT bin the model fills for an input whose band ends at ``cutoff_hz``:
        97 % of the cutoff (the input's own roll-off is left to the model), never below the
        model's ``gen_low_hz``. A cutoff within 5 % of Nyquist (a full-band input) gives
        ``bins``: nothing to fill."""
        model = self.model
        if cutoff_hz >= 0.95 * model.sample_rate / 2:
            return model.bins
        bin_hz = model.sample_rate / model.n_fft
        return int(min(max(math.floor(0.97 * cutoff_hz / bin_hz), model.gen_start), model.bins))

    @torch.no_grad()
    def process(self, chunk: np.ndarray, cutoff_hz: float, seed: int | None = None,
                callback: Callable[[int, int], Any] | None = None) -> np.ndarray:
        """Restore the band above ``cutoff_hz`` of ``chunk`` ``(channels, samples)`` at the model's
        rate; returns the same shape. The high band is generated once for the mid (mean of the
        channels) and added to every channel; each channel keeps its own low band exactly.
        Silent chunks are returned unchanged."""
        model = self.model
        x = torch.from_numpy(np.ascontiguousarray(chunk, np.float32))
        n = x.shape[-1]
        split = self.split_bin(cutoff_hz)
        if split >= model.bins or float(x.pow(2).mean().sqrt()) < _SILENCE_RMS or n < 2:
            return np.asarray(chunk, np.float32)
        device = next(model.parameters()).device
        mid = x.mean(0, keepdim=True).to(device)
        spec = model.stft(mid)  # (1, bins, frames)
        _, cond = model.features(mid)
        generator = torch.Generator(device=device).manual_seed(
            self.seed if seed is None else seed)
        features = model.sample(cond, self.steps, self.guidance_scale, self.eta, self.method,
                                generator=generator, callback=callback)
        magnitude = model.from_features(features[:, 0])  # (1, gen_bins, frames)
        high = magnitude[:, split - model.gen_start:]
        full = self._phase(spec, high, split, n, generator)
        channels = model.stft(x.to(device))
        channels[:, split:] = full[:, split:]
        return model.istft(channels, n).cpu().numpy().astype(np.float32)

    def _phase(self, spec: Tensor, high: Tensor, split: int, length: int,
               generator: torch.Generator) -> Tensor:
        """Griffin-Lim (with momentum 0.99) on the bins from ``split`` up; the bins below keep
        the input's values. Returns the complex spectrogram ``(1, bins, frames)``."""
        model = self.model
        angles = 2 * math.pi * torch.rand(high.shape, generator=generator, device=high.device)
        out = spec.clone()
        out[:, split:] = torch.polar(high, angles)
        previous = out[:, split:].clone()
        for _ in range(self.griffin_lim_iters):
            rebuilt = model.stft(model.istft(out, length))[:, split:]
            accelerated = rebuilt + 0.99 * (rebuilt - previous)
            previous = rebuilt
            # the unit phasor of `accelerated`, without the slow complex exp(i angle)
            out[:, split:] = high * accelerated / accelerated.abs().clamp(min=1e-12)
        return out


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body on ``threads`` torch threads (None: unchanged), then restore the setting."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _model_of(model: Any) -> Upsampler:
    return model if isinstance(model, Upsampler) else Upsampler(model)


class _ChunkModel(nn.Module):
    """An :class:`Upsampler` in :mod:`labkit.separate`'s chunk protocol: ``(batch, channels,
    samples)`` -> ``(batch, 1, channels, samples)``; chunk ``k`` uses seed ``seed + k``."""

    def __init__(self, upsampler: Upsampler, cutoff_hz: float) -> None:
        super().__init__()
        self.upsampler, self.cutoff_hz, self.count = upsampler, cutoff_hz, 0
        self.inner = upsampler.model

    def forward(self, x: Tensor) -> Tensor:
        outputs = []
        for chunk in x.cpu().numpy():
            outputs.append(self.upsampler.process(chunk, self.cutoff_hz,
                                                  seed=self.upsampler.seed + self.count))
            self.count += 1
        return torch.from_numpy(np.stack(outputs))[:, None]


def _stream_upsample(upsampler: Upsampler, blocks: Callable[[], Iterable[np.ndarray]],
                     sr: int, channels: int, total_samples: int, chunk_seconds: float,
                     crossfade_seconds: float, cutoff_hz: float | None, target_lufs: float,
                     progress: bool) -> Iterator[np.ndarray]:
    """Two passes over ``blocks()`` (``(channels, k)`` at ``sr``): the first measures the
    loudness and the cutoff, the second upsamples chunk by chunk. Yields ``(channels, k)``
    blocks at the model's rate; memory stays bounded by the chunk size."""
    from tqdm.auto import tqdm

    from labkit.separate import _Converter, _overlap_add, chunk_starts

    rate = upsampler.sample_rate
    model = upsampler.model
    empty = np.zeros((channels, 0), np.float32)
    meter = _LoudnessMeter(rate, channels)
    power = np.zeros(model.bins)
    frames = 0
    for block in _Converter(sr, rate, channels, channels).stream_all(blocks(), empty):
        if block.shape[-1]:
            meter.add(block)
            spectrum = _mean_power(block, model.n_fft)
            power += spectrum * block.shape[-1]
            frames += block.shape[-1]
    loudness = meter.loudness()
    cutoff = cutoff_hz if cutoff_hz is not None else min(
        _cutoff_from_power(power / max(frames, 1), rate), sr / 2)
    # Below BS.1770's -70 LUFS gate there is nothing to restore: the input passes through.
    silent = not math.isfinite(loudness)
    gain = 1.0 if silent else 10 ** ((target_lufs - loudness) / 20)
    chunk = max(1, round(chunk_seconds * rate))
    fade = min(round(crossfade_seconds * rate), chunk // 2)
    expected = math.ceil(total_samples * rate / sr)
    bar = tqdm(total=len(chunk_starts(expected, chunk, chunk - fade)), unit="chunk",
               desc="upsampling", disable=not progress)
    runner = _ChunkModel(upsampler, cutoff if not silent else rate / 2)
    with bar:
        converted = (b * gain for b in _Converter(sr, rate, channels, channels).stream_all(
            blocks(), empty))
        for out in _overlap_add(runner, converted, chunk, fade, 1, torch.device("cpu"), 1,
                                bar.update):
            yield out[0] / gain


class _LoudnessMeter:
    """BS.1770 integrated loudness computed block by block (as :func:`labkit.audio.loudness`):
    K-weighting with carried filter state, mean squares of 100 ms steps, 400 ms gated blocks."""

    def __init__(self, sr: int, channels: int) -> None:
        from labkit.audio import _channel_weights, k_weighting

        self.sos = k_weighting(sr)
        self.state = np.zeros((len(self.sos), channels, 2))  # at rest, as audio.loudness starts
        self.step = round(0.1 * sr)
        self.weights = _channel_weights(channels)
        self.pending = np.zeros((channels, 0))
        self.steps: list[float] = []

    def add(self, block: np.ndarray) -> None:
        from scipy.signal import sosfilt

        weighted, self.state = sosfilt(self.sos, block.astype(np.float64), axis=-1,
                                       zi=self.state)
        self.pending = np.concatenate([self.pending, weighted], axis=-1)
        whole = self.pending.shape[-1] // self.step * self.step
        if whole:
            squares = (self.pending[:, :whole] ** 2).reshape(self.pending.shape[0], -1, self.step)
            self.steps.extend((self.weights @ squares.sum(-1)).tolist())
            self.pending = self.pending[:, whole:]

    def loudness(self) -> float:
        """Integrated loudness in LUFS (-inf for silence or less than 400 ms)."""
        sums = np.asarray(self.steps)
        if len(sums) < 4:
            return -math.inf
        power = (sums[:-3] + sums[1:-2] + sums[2:-1] + sums[3:]) / (4 * self.step)
        absolute = power > 10.0 ** ((-70.0 + 0.691) / 10.0)
        if not absolute.any():
            return -math.inf
        relative = power > power[absolute].mean() * 0.1
        return -0.691 + 10.0 * math.log10(power[absolute & relative].mean())


def upsample(audio: Any, sr: int, model: Any, *, steps: int | None = None,
             guidance_scale: float | None = None, chunk_seconds: float = 4.0,
             crossfade_seconds: float = 0.25, cutoff_hz: float | None = None,
             target_lufs: float = -20.0, seed: int | None = None,
             progress: bool = False) -> np.ndarray:
    """Restore the high band of ``audio`` ``(channels, samples)`` or ``(samples,)`` at ``sr``.

    ``model``: a SuperResDiffusion or an :class:`Upsampler` (whose settings ``steps``,
    ``guidance_scale`` and ``seed`` override when given). The audio is resampled to the model's
    rate (soxr), loudness-normalised to ``target_lufs``, processed in chunks of ``chunk_seconds``
    cross-faded over ``crossfade_seconds`` (bounded memory), and scaled back. ``cutoff_hz``: the
    input's band edge (default: estimated, at most ``sr / 2``). Silence returns silence.
    Returns float32 ``(channels, samples * rate / sr)`` (1-D input: 1-D output) at the model's
    rate.
    """
    x = _as_array(audio)
    one_d = x.ndim == 1
    x = x[None] if one_d else x
    upsampler = copy.copy(_model_of(model))
    for name, value in (("steps", steps), ("guidance_scale", guidance_scale), ("seed", seed)):
        if value is not None:
            setattr(upsampler, name, value)
    rate = upsampler.sample_rate
    block = max(1, round(4.0 * sr))
    expected = round(x.shape[-1] * rate / sr)
    with _torch_threads(upsampler.threads):
        pieces = list(_stream_upsample(
            upsampler, lambda: (x[:, i:i + block] for i in range(0, x.shape[-1], block)), sr,
            x.shape[0], x.shape[-1], chunk_seconds, crossfade_seconds, cutoff_hz, target_lufs,
            progress))
    out = np.concatenate(pieces, axis=-1)[:, :expected]
    out = np.pad(out, ((0, 0), (0, expected - out.shape[-1])))
    return out[0] if one_d else out


def upsample_file(path: str | os.PathLike, model: Any, out: str | os.PathLike, *,
                  steps: int | None = None, guidance_scale: float | None = None,
                  chunk_seconds: float = 4.0, crossfade_seconds: float = 0.25,
                  cutoff_hz: float | None = None, target_lufs: float = -20.0,
                  seed: int | None = None, progress: bool = True) -> Path:
    """:func:`upsample` from the audio file ``path`` to a WAV (32-bit float) at ``out``, streamed.

    The input is read twice in blocks (loudness and cutoff, then the upsampling) and the output
    written as chunks finish, so memory does not grow with the file. The output has the model's
    rate and the input's channels and duration; it is written to a temporary file and renamed
    into place only when complete. Arguments as in :func:`upsample`.
    """
    import soundfile as sf

    from labkit.audio import info
    from labkit.separate import _open, _read_blocks

    path, out = Path(path), Path(out)
    header = info(path)
    upsampler = copy.copy(_model_of(model))
    for name, value in (("steps", steps), ("guidance_scale", guidance_scale), ("seed", seed)):
        if value is not None:
            setattr(upsampler, name, value)
    rate = upsampler.sample_rate
    block = max(1, round(4.0 * header.sample_rate))

    def blocks() -> Iterator[np.ndarray]:
        with _open(path) as reader:
            yield from _read_blocks(reader, path, block)

    expected = round(header.frames * rate / header.sample_rate)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.part")
    written = 0
    try:
        with _torch_threads(upsampler.threads), sf.SoundFile(
                str(temporary), "w", samplerate=rate, channels=header.channels, format="WAV",
                subtype="FLOAT") as writer:
            for piece in _stream_upsample(upsampler, blocks, header.sample_rate, header.channels,
                                          header.frames, chunk_seconds, crossfade_seconds,
                                          cutoff_hz, target_lufs, progress):
                piece = piece[:, :max(0, expected - written)]
                writer.write(np.ascontiguousarray(piece.T))
                written += piece.shape[-1]
            if written < expected:
                writer.write(np.zeros((expected - written, header.channels), np.float32))
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return out


def load_upsampler(checkpoint: str | os.PathLike, config: Mapping[str, Any] | None = None,
                   device: Any = None, **settings: Any) -> Upsampler:
    """An :class:`Upsampler` for the model in ``checkpoint`` with the ``inference`` settings of
    ``config`` (default :func:`load_config`); keyword ``settings`` override them. The model goes
    to ``device`` (default :func:`labkit.device`: the GPU when there is one)."""
    from labkit.checkpoint import load_model
    from labkit.core import device as default_device
    from labkit.models import diffusion  # noqa: F401 - registers the model (no other imports)

    config = config if config is not None else load_config()
    inference = config["inference"]
    options = {"steps": inference["sample_steps"], "guidance_scale": inference["guidance_scale"],
               "eta": inference["eta"], "griffin_lim_iters": inference["griffin_lim_iters"],
               "seed": inference["seed"]}
    options.update({k: v for k, v in settings.items() if v is not None})
    model = load_model(checkpoint, expected_model="superres_diffusion",
                       map_location=device if device is not None else default_device())
    return Upsampler(model, **options)


# =========================================================================== evaluation
def evaluate(model: Any, clips: Mapping[str, np.ndarray], sr: int, *, low_rate: int = 11025,
             kind: str = "soxr", cutoff_hz: float | None = None, steps: int | None = None,
             guidance_scale: float | None = None, seed: int = 0,
             progress: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """Score the model, soxr resampling and the band-limited input on reference ``clips``.

    ``clips``: ``{name: (channels, samples)}`` at ``sr`` (the full-band references). Each is
    degraded with :func:`degrade` (``kind``, ``cutoff_hz``; ``"soxr"``: the exact 4x case).
    Methods: ``"model"`` (:func:`upsample` of the band-limited signal), ``"soxr"`` (soxr from
    the low rate back up: for ``kind="soxr"`` the standard baseline), and ``"input"`` (the
    band-limited signal at ``sr``, which is what the model is given). Scores:
    ``lsd`` (full band), ``lsd_high`` (above ``low_rate / 2``), both
    :func:`labkit.metrics.lsd` in bels with ``eps = LSD_EPS``; ``snr`` in dB. Returns
    ``{method: {clip: {score: value}}}`` (``model=None`` skips the model).
    """
    from labkit.audio import resample
    from labkit.metrics import lsd, snr

    results: dict[str, dict[str, dict[str, float]]] = {"model": {}, "soxr": {}, "input": {}}
    edge = low_rate / 2
    for name, reference in clips.items():
        reference = _as_array(reference)
        condition = degrade(reference, sr, kind, cutoff_hz, low_rate)
        low = resample(reference if kind == "soxr" else condition, sr, low_rate)
        baseline = _fit(np.atleast_2d(resample(low, low_rate, sr)), reference.shape[-1])
        estimates = {"soxr": baseline.reshape(reference.shape), "input": condition}
        if model is not None:
            source, rate = (low, low_rate) if kind == "soxr" else (condition, sr)
            estimates["model"] = _fit(np.atleast_2d(upsample(
                source, rate, model, steps=steps, guidance_scale=guidance_scale, seed=seed,
                progress=progress)), reference.shape[-1]).reshape(reference.shape)
        for method, estimate in estimates.items():
            results[method][name] = {
                "lsd": float(lsd(reference, estimate, sr=sr, eps=LSD_EPS)),
                "lsd_high": float(lsd(reference, estimate, sr=sr, eps=LSD_EPS,
                                      freq_range=(edge, None))),
                "snr": float(snr(reference, estimate)),
            }
    if model is None:
        del results["model"]
    return results


def summarize(results: Mapping[str, Mapping[str, Mapping[str, float]]]
              ) -> dict[str, dict[str, float]]:
    """The mean over clips of each score: ``{method: {score: mean}}``."""
    return {method: {score: float(np.mean([clip[score] for clip in clips.values()]))
                     for score in next(iter(clips.values()))}
            for method, clips in results.items() if clips}


# =========================================================================== notebook panels
def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def inference_panel(model: Any, clips: Mapping[str, np.ndarray], sr: int, *,
                    low_rate: int = 11025, steps: int = 25, guidance_scale: float = 1.5,
                    kinds: Sequence[str] = KINDS, display: bool = True) -> Any:
    """Try the model: choose a clip, a degradation and its cutoff, DDIM steps and guidance; run
    with a progress bar; compare spectrograms and listen (input, model, reference).

    ``clips``: ``{name: (channels, samples)}`` full-band references at ``sr``. Live mode
    (JupyterLab): controls, a Run button and an output area. Static mode (tests, headless runs):
    runs once with the first clip and the given settings and shows the comparison
    (:func:`labkit.widgets.compare`). Returns the panel (live) or the comparison (static).
    """
    from labkit import widgets

    upsampler = _model_of(model)

    def run(clip: str, kind: str, cutoff_hz: float, steps: int, guidance: float,
            callback: Callable[[int, int], Any] | None = None) -> dict[str, np.ndarray]:
        reference = _as_array(clips[clip])
        condition = degrade(reference, sr, kind, cutoff_hz, low_rate)
        runner = copy.copy(upsampler)
        runner.steps, runner.guidance_scale = int(steps), float(guidance)
        restored = _restore_with_callback(runner, condition, sr, None, callback)
        return {f"input ({kind})": condition, f"model ({steps} steps, w={guidance:g})": restored,
                "reference": reference}

    names = list(clips)
    if widgets.mode() == "static":
        return widgets.compare(run(names[0], kinds[0], 0.25 * sr / 2, steps, guidance_scale),
                               sr, display=display)
    import ipywidgets as ipw
    from IPython import display as ipd

    controls = {
        "clip": ipw.Dropdown(options=names, description="clip"),
        "kind": ipw.Dropdown(options=list(kinds), description="degradation"),
        "cutoff_hz": ipw.FloatSlider(value=0.25 * sr / 2, min=0.2 * sr / 2, max=0.3 * sr / 2,
                                     step=100, description="cutoff (Hz)",
                                     style={"description_width": "initial"}),
        "steps": ipw.IntSlider(value=steps, min=1, max=100, description="DDIM steps"),
        "guidance": ipw.FloatSlider(value=guidance_scale, min=0.0, max=4.0, step=0.25,
                                    description="guidance"),
    }
    button = ipw.Button(description="Run", icon="play", button_style="primary")
    bar = ipw.IntProgress(value=0, min=0, max=1, description="sampling")
    output = ipw.Output()

    def on_click(_: Any) -> None:
        button.disabled = True
        values = {k: w.value for k, w in controls.items()}

        def tick(done: int, total: int) -> None:
            bar.max, bar.value = total, done

        try:
            signals = run(**values, callback=tick)
            output.clear_output(wait=True)
            with output:
                widgets.compare(signals, sr)
        except Exception as exc:  # noqa: BLE001 - show the problem in the panel, keep it usable
            with output:
                print(f"{type(exc).__name__}: {exc}")
        finally:
            button.disabled = False

    button.on_click(on_click)
    panel = ipw.VBox([ipw.HBox([controls["clip"], controls["kind"]]), controls["cutoff_hz"],
                      ipw.HBox([controls["steps"], controls["guidance"]]),
                      ipw.HBox([button, bar]), output])
    if display:
        ipd.display(panel)
    return panel


def _restore_with_callback(upsampler: Upsampler, condition: np.ndarray, sr: int,
                           cutoff: float | None, callback: Callable[[int, int], Any] | None
                           ) -> np.ndarray:
    """:func:`upsample` of one short clip in one chunk, reporting DDIM progress to
    ``callback``."""
    x = np.atleast_2d(condition)
    rate = upsampler.sample_rate
    if sr != rate:
        from labkit.audio import resample

        x = resample(x, sr, rate)
    cutoff = cutoff if cutoff is not None else estimate_cutoff(x, rate)
    meter = _LoudnessMeter(rate, x.shape[0])
    meter.add(x)
    loudness = meter.loudness()
    gain = 1.0 if not math.isfinite(loudness) else 10 ** ((-20.0 - loudness) / 20)
    with _torch_threads(upsampler.threads):
        out = upsampler.process(x * gain, cutoff, callback=callback) / gain
    return out.reshape(condition.shape) if condition.ndim == 1 else out


def training_panel(config: Mapping[str, Any], workdir: str | Path, *,
                   model: nn.Module | None = None, static_steps: int = 10,
                   display: bool = True) -> Any:
    """Train interactively: Start/Stop buttons, a live loss curve, and Save checkpoint.

    Live mode: Start runs :func:`make_trainer`'s Trainer in a background thread (resuming the
    run in ``workdir``), every "log" event redraws the curve, Stop calls
    ``Trainer.request_stop`` (the run writes a checkpoint and can be started again), and Save
    writes ``workdir/saved.pt``. Static mode: trains ``static_steps`` steps (a new run in
    ``workdir``) and shows the curve as a PNG. Returns ``(panel, trainer)`` (live) or
    ``(image or figure, trainer)`` (static).
    """
    from labkit import figures, widgets
    from labkit.checkpoint import save_checkpoint

    config = copy.deepcopy(dict(config))
    if widgets.mode() == "static":
        trainer = make_trainer(config, workdir, model=model, progress=False, resume=None,
                               overwrite=True, max_steps=static_steps)
        trainer.fit()
        fig, _ = figures.loss_curves(trainer.history, title=f"{trainer.step} training steps")
        image = None
        if display:
            from IPython import display as ipd

            image = ipd.Image(data=_figure_png(fig), format="png")  # also closes the figure
            ipd.display(image)
        return (image if image is not None else fig), trainer
    import ipywidgets as ipw
    from IPython import display as ipd

    image = ipw.Image(format="png")
    status = ipw.HTML("not started")
    start = ipw.Button(description="Start", icon="play", button_style="success")
    stop = ipw.Button(description="Stop", icon="stop", button_style="warning", disabled=True)
    save = ipw.Button(description="Save checkpoint", icon="save")
    state: dict[str, Any] = {"thread": None}

    def redraw(trainer: Any, event: str, info: dict[str, Any]) -> None:
        if event == "log" and len(trainer.history["step"]) >= 2:
            fig, _ = figures.loss_curves(trainer.history, figsize=(6, 3), smooth=5)
            image.value = _figure_png(fig)
        status.value = (f"step {trainer.step}, loss {info.get('train_loss', float('nan')):.4f}"
                        if event == "log" else f"{event} at step {trainer.step}")

    budget = config["train"]["minutes"]
    callbacks = [redraw] + ([budget_callback(60.0 * budget)] if budget else [])
    trainer = make_trainer(config, workdir, model=model, progress=False, callbacks=callbacks)

    def run() -> None:
        try:
            trainer.fit()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            status.value = f"stopped by {type(exc).__name__}: {exc}"
        finally:
            start.disabled, stop.disabled = False, True

    def on_start(_: Any) -> None:
        start.disabled, stop.disabled = True, False
        thread = threading.Thread(target=run, daemon=True)
        state["thread"] = thread
        thread.start()

    def on_save(_: Any) -> None:
        path = Path(workdir) / "saved.pt"
        save_checkpoint(path, model=trainer.model, step=trainer.step)
        status.value = f"saved {path} (step {trainer.step})"

    start.on_click(on_start)
    stop.on_click(lambda _: trainer.request_stop())
    save.on_click(on_save)
    panel = ipw.VBox([ipw.HBox([start, stop, save]), status, image])
    if display:
        ipd.display(panel)
    return panel, trainer


# =========================================================================== command lines
def add_upsample_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``labkit upsample`` (used by :mod:`labkit.cli`)."""
    parser.add_argument("input", type=Path, metavar="IN", help="band-limited audio file")
    parser.add_argument("--model", type=Path, required=True, metavar="CKPT",
                        help="checkpoint of a superres_diffusion model (e.g. runs/.../best.pt)")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="output WAV (32-bit float, at the model's rate)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, default=1.5,
                        help="classifier-free guidance scale (default 1.5; 1 = conditional only)")
    parser.add_argument("--chunk-seconds", type=float, default=4.0,
                        help="chunk length; memory is bounded by it (default 4)")
    parser.add_argument("--crossfade-seconds", type=float, default=0.25,
                        help="overlap of neighbouring chunks (default 0.25)")
    parser.add_argument("--cutoff", type=float, default=None, metavar="HZ",
                        help="the input's band edge (default: estimated from the file)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML whose inference section sets the other defaults")
    parser.add_argument("--cpu", action="store_true", help="use the CPU even when a GPU is there")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_upsample(args: argparse.Namespace) -> int:
    """``labkit upsample``: restore the high band of one file; prints where it went."""
    config = load_config(args.config)
    if args.steps < 1:
        raise LabkitError(f"--steps {args.steps}: give at least 1")
    if not args.input.is_file():
        raise AudioError(f"'{args.input}' does not exist")
    upsampler = load_upsampler(args.model, config, device="cpu" if args.cpu else None,
                               steps=args.steps,
                               guidance_scale=args.guidance, seed=args.seed)
    started = time.perf_counter()
    out = upsample_file(args.input, upsampler, args.out, chunk_seconds=args.chunk_seconds,
                        crossfade_seconds=args.crossfade_seconds, cutoff_hz=args.cutoff,
                        target_lufs=config["inference"]["target_lufs"],
                        progress=not args.no_progress)
    print(f"wrote {out} ({upsampler.sample_rate} Hz) in {time.perf_counter() - started:.1f} s")
    return 0


def cli_upsample_main(argv: Sequence[str] | None = None) -> int:
    """Run ``labkit upsample`` on ``argv`` (for ``python -m labkit.superres upsample``)."""
    parser = add_upsample_arguments(argparse.ArgumentParser(prog="labkit upsample"))
    return run_upsample(parser.parse_args(argv))


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``labkit train superres``."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: shipped)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/superres"),
                        help="run folder (default runs/superres)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training budget (default: the config's train.minutes)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true",
                        help="delete a run found in --workdir and start again")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def run_train(args: argparse.Namespace) -> int:
    """``labkit train superres``: train with a config; prints the checkpoint to use."""
    config = load_config(args.config)
    result = train_superres(args.workdir, config, minutes=args.minutes,
                            max_steps=args.max_steps, progress=not args.no_progress,
                            resume=None if args.overwrite else "auto", overwrite=args.overwrite)
    print(f"{result.steps} steps in {result.seconds / 60:.1f} min ({result.stopped_by}); "
          f"checkpoint: {result.checkpoint}")
    return 0


def cli_train_main(argv: Sequence[str] | None = None) -> int:
    """Run ``labkit train superres`` on ``argv``."""
    parser = add_train_arguments(argparse.ArgumentParser(prog="labkit train superres"))
    return run_train(parser.parse_args(argv))
