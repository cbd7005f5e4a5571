"""The training loop every notebook uses: the model and the loss plug in, the loop is written once.

:class:`Trainer` runs optimisation with an optional LR schedule, gradient clipping and mixed
precision (CUDA only), shows a progress bar, validates, stops early, writes periodic, best and
final checkpoints atomically, resumes an interrupted run exactly, and returns the loss
:class:`History` (also saved as ``history.json``). A run folder looks like::

    workdir/
        manifest.json           how the run was made (labkit.run_manifest + the Trainer settings)
        history.json            the losses (see History)
        checkpoints/step_0000500.pt   periodic checkpoints (the last few are kept)
        best.pt                 the lowest validation loss so far
        final.pt                the end of training

Minimal use::

    trainer = Trainer(model, train_loader, torch.nn.functional.l1_loss, val_loader,
                      workdir="runs/02_unet", max_steps=2000, ckpt_every=200, resume="auto")
    history = trainer.fit()

Models whose loss is not ``loss_fn(model(x), y)`` pass ``step_fn(model, batch, device) -> loss``
(a diffusion model draws its noise and timesteps there).

Exact resume: the data order of epoch ``e`` depends only on ``(seed, e)`` (the trainer seeds
torch's CPU generator for the moment it creates the epoch's iterator, without disturbing the
training random stream), and a checkpoint stores every random generator's state, the position in
the epoch and the partial logging window. A run killed at any point and resumed from its last
checkpoint therefore ends with the same weights and history as an uninterrupted one, as long as
the data set itself is deterministic for a given epoch (``set_epoch(epoch)`` is called on the
data, its dataset and its sampler when they have it) and the computation is deterministic.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.checkpoint import (
    _load_weights,
    atomic_write,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from labkit.core import device as default_device
from labkit.core import run_manifest, seed_everything
from labkit.errors import CheckpointError, LabkitError
from labkit.models import _plain, model_config

__all__ = ["CosineToBudget", "History", "NonFiniteLossError", "TimeBudget", "TrainResult",
           "Trainer", "budget_callbacks", "evaluate_loss"]

StepFn = Callable[[nn.Module, Any, torch.device], torch.Tensor]
Callback = Callable[["Trainer", str, dict[str, Any]], None]

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
_HISTORY_WRITE_INTERVAL_S = 2.0


class NonFiniteLossError(LabkitError):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------------------- history
class History(dict):
    """The losses of a run: a dict of lists, saved as ``workdir/history.json``.

    One entry per log: ``step``, ``epoch`` (epochs completed by then), ``train_loss`` (the mean
    over the steps since the previous entry), ``lr`` (the learning rate of the last of those
    steps), ``time`` (training seconds since the run started, resumes included) and, with
    gradient clipping, ``grad_norm`` (the mean norm before clipping). One entry per validation:
    ``val_step`` and ``val_loss``.
    """

    KEYS = ("step", "epoch", "train_loss", "lr", "time", "val_step", "val_loss")

    def __init__(self, data: dict[str, Sequence[Any]] | None = None) -> None:
        super().__init__({key: [] for key in self.KEYS})
        for key, values in (data or {}).items():
            self[key] = list(values)

    @property
    def best_val_loss(self) -> float | None:
        """The lowest validation loss, or None before the first validation."""
        return min(self["val_loss"]) if self["val_loss"] else None

    def save(self, path: str | Path) -> Path:
        """Write the history to ``path`` as JSON (atomically). Returns the path."""
        return _write_json(Path(path), dict(self), one_line_values=True)

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a history written by :meth:`save` (e.g. ``workdir/history.json``)."""
        path = Path(path)
        try:
            return cls(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise LabkitError(f"{path}: cannot read a training history ({exc})") from exc


def _write_json(path: Path, data: dict[str, Any], one_line_values: bool = False) -> Path:
    """Write ``data`` as JSON atomically; ``one_line_values`` puts each key's value on one line."""
    if one_line_values:
        text = "{\n" + ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}"
                                   for key, value in data.items()) + "\n}\n"
    else:
        text = json.dumps(data, indent=1) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


# ----------------------------------------------------------------------------------- helpers
def _to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) tuple/list/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, (list, tuple)):
        moved = [_to_device(item, device) for item in batch]
        return type(batch)(moved) if type(batch) in (list, tuple) else type(batch)(*moved)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch


def _batch_size(batch: Any) -> int:
    """The leading size of the first tensor in a (nested) batch; 1 when there is none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if isinstance(item, (torch.Tensor, list, tuple, dict)):
                return _batch_size(item)
    return 1


def _compute_loss(model: nn.Module, batch: Any, loss_fn: Callable | None, step_fn: StepFn | None,
                  device: torch.device) -> torch.Tensor:
    if step_fn is not None:
        loss = step_fn(model, batch, device)
    else:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise LabkitError(
                f"the default training step expects batches (inputs, targets), got a "
                f"{type(batch).__name__}; pass step_fn(model, batch, device) -> loss for other "
                "batches")
        inputs, targets = batch
        loss = loss_fn(model(inputs), targets)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise LabkitError(
            f"the loss must be a scalar tensor, got {shape}; reduce it (e.g. .mean()) in the "
            "loss function or step_fn")
    return loss.reshape(())


def _set_epoch(data: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the data, its dataset and its samplers, where they have it."""
    seen: set[int] = set()
    batch_sampler = getattr(data, "batch_sampler", None)
    for obj in (data, getattr(data, "dataset", None), getattr(data, "sampler", None),
                batch_sampler, getattr(batch_sampler, "sampler", None)):
        if obj is not None and id(obj) not in seen and callable(getattr(obj, "set_epoch", None)):
            seen.add(id(obj))
            obj.set_epoch(epoch)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence((seed % 2**32, epoch)).generate_state(1)[0])


def _length(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def _use_amp(amp: bool | None, device: torch.device) -> bool:
    """AMP on CUDA only: automatic there unless turned off, never elsewhere."""
    if device.type != "cuda":
        if amp:
            warnings.warn(f"amp=True ignored: mixed precision is used on CUDA only, not {device}",
                          stacklevel=3)
        return False
    return True if amp is None else bool(amp)


def _all_frozen(module: nn.Module) -> bool:
    """True for a module that has parameters, none of which requires a gradient."""
    flags = [p.requires_grad for p in module.parameters()]
    return bool(flags) and not any(flags)


def _name(obj: Any) -> Any:
    """A JSON-friendly description of a setting that may be a function or an object."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return getattr(obj, "__name__", None) or type(obj).__name__


# ----------------------------------------------------------------------------------- evaluation
def evaluate_loss(model: nn.Module, data: Iterable, loss_fn: Callable | None = None,
                  device: torch.device | str | None = None, *, step_fn: StepFn | None = None,
                  amp: bool = False, seed: int = 0) -> float:
    """The mean loss of ``model`` over ``data``, weighted by batch size, without gradients.

    Uses ``loss_fn(model(x), y)`` on batches ``(x, y)``, or ``step_fn(model, batch, device)``.
    ``device`` defaults to the model's. The model is in eval mode meanwhile (its mode is restored
    after), ``set_epoch(0)`` is called on data that has it, and torch's generators are seeded
    with ``seed`` inside a fork, so a loss with random parts (diffusion noise) is comparable
    from one validation to the next and the caller's random stream is left untouched.
    """
    if loss_fn is None and step_fn is None:
        raise LabkitError("evaluate_loss: give loss_fn (e.g. torch.nn.functional.mse_loss) or "
                          "step_fn")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else default_device()
    device = torch.device(device)
    cuda = device.type == "cuda"
    forked = [device.index if device.index is not None else torch.cuda.current_device()] \
        if cuda else []
    was_training = model.training
    model.eval()
    _set_epoch(data, 0)
    total, count = 0.0, 0
    try:
        with torch.random.fork_rng(devices=forked), torch.no_grad():
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed(seed)
            for batch in data:
                batch = _to_device(batch, device)
                with torch.autocast(device_type=device.type, dtype=torch.float16,
                                    enabled=amp and cuda):
                    loss = _compute_loss(model, batch, loss_fn, step_fn, device)
                size = _batch_size(batch)
                total += float(loss.float()) * size
                count += size
    finally:
        model.train(was_training)
    if count == 0:
        raise LabkitError("evaluate_loss: the validation data yielded no batches")
    return total / count


# ----------------------------------------------------------------------------------- optimiser
def _build_optimizer(optimizer: str | Callable, params: list[nn.Parameter], lr: float,
                     weight_decay: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    if callable(optimizer):
        built = optimizer(params)
        if not isinstance(built, torch.optim.Optimizer):
            raise LabkitError(f"optimizer callable returned {built!r}, not a torch Optimizer")
        return built
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if optimizer not in classes:
        raise LabkitError(f"optimizer={optimizer!r}; use one of {sorted(classes)} or a "
                          "function params -> torch.optim.Optimizer")
    return classes[optimizer](params, lr=lr, weight_decay=weight_decay, **options)


def _build_scheduler(schedule: str | Callable | None, optimizer: torch.optim.Optimizer,
                     total_steps: int | None, warmup_steps: int, options: dict[str, Any],
                     has_validation: bool) -> Any:
    options = dict(options)
    if callable(schedule):
        return schedule(optimizer)
    if schedule == "plateau":
        if not has_validation:
            raise LabkitError("schedule='plateau' lowers the lr when the validation loss stalls: "
                              "it needs val_data")
        settings = {"factor": 0.5, "patience": 2, **options}
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **settings)
    known = (None, "cosine", "step", "onecycle")
    if schedule not in known:
        raise LabkitError(f"schedule={schedule!r}; use one of {list(known)} or 'plateau', or a "
                          "function optimizer -> torch lr scheduler (stepped every step)")
    if schedule in ("cosine", "step", "onecycle") and total_steps is None:
        raise LabkitError(f"schedule={schedule!r} needs the run length: give max_steps, or epochs "
                          "with a train_data that has a len()")
    if schedule == "onecycle":
        peaks = [group["lr"] for group in optimizer.param_groups]
        pct = warmup_steps / total_steps if warmup_steps else 0.3
        settings = {"pct_start": min(max(pct, 1e-6), 1.0), **options}
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks,
                                                   total_steps=total_steps, **settings)
    if schedule is None and not warmup_steps:
        if options:
            raise LabkitError(f"schedule_options {options} given without a schedule")
        return None

    def warmup(index: int) -> float:
        return min(1.0, (index + 1) / warmup_steps) if warmup_steps else 1.0

    if schedule is None:
        factor = warmup
    elif schedule == "cosine":
        floor = options.pop("min_lr_ratio", 0.0)
        span = max(1, total_steps - warmup_steps)

        def factor(index: int) -> float:
            progress = min(1.0, max(0, index - warmup_steps) / span)
            return warmup(index) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    else:  # step
        step_size = int(options.pop("step_size", max(1, total_steps // 3)))
        gamma = float(options.pop("gamma", 0.1))

        def factor(index: int) -> float:
            return warmup(index) * gamma ** (index // step_size)
    if options:
        raise LabkitError(f"schedule_options {sorted(options)} are not used by schedule="
                          f"{schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------- trainer
class TimeBudget:
    """A Trainer callback that ends the run once ``seconds`` of training have passed.

    The clock is read at each history entry (every ``log_every`` steps). ``clock="wall"`` counts
    the Trainer's training time (resumed sessions included); ``clock="process"`` counts this
    process's CPU time since the callback was made, divided by torch's CPU threads when
    ``per_thread`` (on a machine shared with other jobs, about the wall time the same work takes
    on an idle one) or summed over them (the compute actually received).
    ``finish=True`` ends the run as reaching ``max_steps`` would (the Trainer still validates,
    updates ``best.pt`` and writes ``final.pt``); ``finish=False`` asks it to stop after the
    current step (:meth:`Trainer.request_stop`). ``fired`` tells whether the budget ended the run.
    """

    def __init__(self, seconds: float, clock: str = "wall", *, per_thread: bool = True,
                 finish: bool = True) -> None:
        if clock not in ("wall", "process"):
            raise LabkitError(f"{type(self).__name__}: clock={clock!r}; use 'wall' or 'process'")
        self.seconds = float(seconds)
        self.clock = clock
        self.per_thread = per_thread
        self.finish = finish
        self.fired = False
        self._cpu_start = time.process_time()

    def spent(self, trainer: Any) -> float:
        """Seconds of the budget used so far, on this callback's clock."""
        if self.clock == "wall":
            return float(trainer.elapsed)
        cpu = time.process_time() - self._cpu_start
        return cpu / torch.get_num_threads() if self.per_thread else cpu

    def __call__(self, trainer: Any, event: str, info: dict[str, Any]) -> None:
        if event == "log" and not self.fired and self.spent(trainer) >= self.seconds:
            self.fired = True
            if self.finish:
                trainer.max_steps = trainer.step
            else:
                trainer.request_stop()


class CosineToBudget:
    """A Trainer callback that lowers the learning rates along a cosine as a budget is spent.

    The budget is ``budget`` (a :class:`TimeBudget`: seconds on its clock) and/or ``max_steps``;
    the fraction spent is the larger of the two. At every history entry ("log" event, every
    ``log_every`` steps) each parameter group's rate is set to ``base * (min_lr_ratio + (1 -
    min_lr_ratio) * (1 + cos(pi * fraction)) / 2)``, where ``base`` is the group's rate when the
    Trainer was built. A run on a clock cannot know its step count in advance, so this is how it
    ends on a low learning rate (averaging out the noise of the last updates) when time runs out.
    """

    def __init__(self, budget: TimeBudget | None = None, max_steps: int | None = None,
                 min_lr_ratio: float = 0.0) -> None:
        if budget is None and max_steps is None:
            raise LabkitError("CosineToBudget: give a TimeBudget, max_steps or both")
        if max_steps is not None and max_steps < 1:
            raise LabkitError(f"CosineToBudget: max_steps={max_steps!r}; expected >= 1")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise LabkitError(f"CosineToBudget: min_lr_ratio={min_lr_ratio!r}; expected a "
                              "number in [0, 1]")
        self.budget, self.max_steps, self.min_lr_ratio = budget, max_steps, float(min_lr_ratio)

    def fraction(self, trainer: Any) -> float:
        """The share of the budget spent, in [0, 1]."""
        done = 0.0
        if self.budget is not None and self.budget.seconds > 0:
            done = self.budget.spent(trainer) / self.budget.seconds
        if self.max_steps is not None:
            done = max(done, trainer.step / self.max_steps)
        return min(max(done, 0.0), 1.0)

    def factor(self, fraction: float) -> float:
        """The learning-rate multiplier once ``fraction`` of the budget is spent."""
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine

    def __call__(self, trainer: Any, event: str, info: dict[str, Any]) -> None:
        if event != "log":
            return
        factor = self.factor(self.fraction(trainer))
        for group, base in zip(trainer.optimizer.param_groups, trainer._base_lrs):
            group["lr"] = base * factor


def budget_callbacks(budget: TimeBudget | None, max_steps: int | None = None,
                     anneal: bool = False, min_lr_ratio: float = 0.0) -> list[Callback]:
    """The Trainer callbacks of a budgeted run: ``budget`` (if any) ends it, and with ``anneal``
    a :class:`CosineToBudget` lowers the rates to ``min_lr_ratio`` of themselves as the budget
    (time and/or ``max_steps``) is spent."""
    callbacks: list[Callback] = [budget] if budget is not None else []
    if anneal:
        callbacks.append(CosineToBudget(budget, max_steps, min_lr_ratio))
    return callbacks


@dataclass
class TrainResult:
    """What a course training function returns (:func:`labkit.stems.train_waveunet`,
    :func:`labkit.vocals.train_spec_unet`).

    ``model``: the network with the weights of the lowest validation loss (else the last ones), in
    eval mode; ``history``: the Trainer's; ``workdir``; ``steps``; ``seconds``: training wall time
    (resumed sessions included); ``stopped_by``: "budget", "max_steps", "epochs" or "stopped";
    ``settings``: the options of the run; ``separator``: the model wrapped for whole songs, where
    the model needs a wrapper for that (the spectrogram U-Net), else None.
    """

    model: nn.Module
    history: dict[str, list]
    workdir: Path
    steps: int
    seconds: float
    stopped_by: str
    settings: dict[str, Any] = field(default_factory=dict)
    separator: nn.Module | None = None

    @property
    def steps_per_second(self) -> float:
        """Training steps per second of wall time."""
        return self.steps / self.seconds if self.seconds > 0 else math.nan


class Trainer:
    """Train ``model`` on ``train_data``; see the module docstring for the run folder.

    Arguments (all after ``val_data`` are keywords):
        model: the network; moved to ``device``. Only parameters with ``requires_grad`` are
            optimised (freeze a part by setting it False before building the Trainer); a
            submodule whose parameters are all frozen runs in eval mode while training.
        train_data: any re-iterable of batches (a DataLoader, a list). One pass is an epoch.
        loss_fn: ``loss_fn(model(x), y) -> scalar`` for batches ``(x, y)``.
        val_data: batches for :func:`evaluate_loss`; enables best.pt and early stopping.
        workdir: the run folder.
        max_steps, epochs: when to stop (give at least one; both: whichever comes first).
        lr, optimizer ("adam", "adamw", "sgd" or ``params -> Optimizer``), weight_decay,
        optimizer_options: extra keyword arguments of the optimizer (e.g. ``{"momentum": 0.9}``).
        schedule: None, "cosine" (to ``min_lr_ratio`` × lr), "step" (× ``gamma`` every
            ``step_size`` steps), "plateau" (× ``factor`` after ``patience`` validations without
            improvement), "onecycle", or ``optimizer -> scheduler`` (stepped every step);
            schedule_options: their settings. warmup_steps: linear warm-up from lr/warmup_steps.
        grad_clip: clip the gradient norm to this value. amp: mixed precision (None: on CUDA
            only; never on the CPU). device: default :func:`labkit.device`.
        ckpt_every: a periodic checkpoint every this many steps (None: none; a stop request and
            the end still write one); keep_checkpoints: how many periodic ones to keep.
        val_every: validate every this many steps (None: at the end of each epoch); the run also
            validates at its end when its last step was not validated.
        log_every: steps per history entry. early_stopping_patience: stop after this many
            validations in a row without a new best.
        resume: None (a new run; refuses a workdir that holds one unless ``overwrite``), "auto"
            (continue from the newest checkpoint of workdir, or start), or a checkpoint path.
        seed: seeds everything at the start of a new run. config: the model config stored in
            checkpoints (default :func:`labkit.models.model_config` for registered models).
        step_fn: ``step_fn(model, batch, device) -> loss`` replaces the default step; the batch
            arrives already on the device.
        progress: show a progress bar. tensorboard: also log to workdir/tensorboard (None: when
            the tensorboard package is installed). callbacks: functions
            ``(trainer, event, info)`` called on "log", "validate", "checkpoint" and "end".
        data_fingerprint: recorded in the manifest (see :func:`labkit.core.fingerprint`).
    """

    def __init__(self, model: nn.Module, train_data: Iterable, loss_fn: Callable | None = None,
                 val_data: Iterable | None = None, *, workdir: str | Path,
                 max_steps: int | None = None, epochs: int | None = None, lr: float = 1e-3,
                 optimizer: str | Callable = "adam", weight_decay: float = 0.0,
                 optimizer_options: dict[str, Any] | None = None,
                 schedule: str | Callable | None = None,
                 schedule_options: dict[str, Any] | None = None, warmup_steps: int = 0,
                 grad_clip: float | None = None, amp: bool | None = None,
                 device: torch.device | str | None = None, ckpt_every: int | None = None,
                 keep_checkpoints: int | None = 3, val_every: int | None = None,
                 log_every: int = 10, early_stopping_patience: int | None = None,
                 resume: str | Path | None = None, overwrite: bool = False, seed: int = 0,
                 config: dict[str, Any] | None = None, step_fn: StepFn | None = None,
                 progress: bool = True, tensorboard: bool | None = None,
                 callbacks: Sequence[Callback] = (), data_fingerprint: str | None = None) -> None:
        if loss_fn is None and step_fn is None:
            raise LabkitError("Trainer: give loss_fn (e.g. torch.nn.functional.l1_loss) or "
                              "step_fn(model, batch, device) -> loss")
        if max_steps is None and epochs is None:
            raise LabkitError("Trainer: give max_steps or epochs (or both) to say when to stop")
        for label, value in (("max_steps", max_steps), ("epochs", epochs),
                             ("ckpt_every", ckpt_every), ("val_every", val_every),
                             ("keep_checkpoints", keep_checkpoints),
                             ("early_stopping_patience", early_stopping_patience)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise LabkitError(f"Trainer: {label}={value!r}; use a positive integer or None")
        if not isinstance(log_every, int) or log_every < 1:
            raise LabkitError(f"Trainer: log_every={log_every!r}; use a positive integer")
        if early_stopping_patience is not None and val_data is None:
            raise LabkitError("Trainer: early_stopping_patience needs val_data")
        if overwrite and resume is not None:
            raise LabkitError(f"Trainer: overwrite=True starts a new run, resume={resume!r} "
                              "continues one; give one of them")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise LabkitError(f"Trainer: warmup_steps={warmup_steps!r}; use an integer >= 0")
        if grad_clip is not None and not grad_clip > 0:
            raise LabkitError(f"Trainer: grad_clip={grad_clip!r}; use a positive number or None")

        self.workdir = Path(workdir)
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.best_path = self.workdir / "best.pt"
        self.final_path = self.workdir / "final.pt"
        self.history_path = self.workdir / "history.json"
        self.manifest_path = self.workdir / "manifest.json"

        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device)
        self.train_data, self.val_data = train_data, val_data
        self.loss_fn, self.step_fn = loss_fn, step_fn
        self.max_steps, self.epochs = max_steps, epochs
        self.steps_per_epoch = _length(train_data)
        if self.steps_per_epoch == 0:
            raise LabkitError("Trainer: train_data is empty (len() == 0)")
        lengths = [max_steps] if max_steps is not None else []
        if epochs is not None and self.steps_per_epoch is not None:
            lengths.append(epochs * self.steps_per_epoch)
        self.total_steps = min(lengths) if lengths else None
        self.grad_clip, self.amp = grad_clip, _use_amp(amp, self.device)
        self.ckpt_every, self.keep_checkpoints = ckpt_every, keep_checkpoints
        self.val_every, self.log_every = val_every, log_every
        self.patience, self.seed = early_stopping_patience, seed
        self.progress, self.tensorboard = progress, tensorboard
        self.callbacks = list(callbacks)
        self.data_fingerprint = data_fingerprint
        self.warmup_steps = warmup_steps

        self.trainable_parameters = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable_parameters:
            raise LabkitError("Trainer: the model has no parameters with requires_grad=True")
        # Submodules whose parameters are all frozen train in eval mode, so that "frozen" also
        # holds for their batch-norm statistics and dropout (an encoder kept fixed while
        # fine-tuning on one song).
        self.frozen_modules = [m for m in self.model.modules() if _all_frozen(m)]
        self.optimizer = _build_optimizer(optimizer, self.trainable_parameters, lr, weight_decay,
                                          dict(optimizer_options or {}))
        self._base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.scheduler = _build_scheduler(schedule, self.optimizer, self.total_steps,
                                          warmup_steps, dict(schedule_options or {}),
                                          val_data is not None)
        self._plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp else None
        if config is None:
            try:
                config = model_config(model)
            except LabkitError:
                config = None  # an unregistered model still trains; load_model cannot rebuild it
        self.config = _plain(config, "Trainer: config")
        self.settings = {
            "max_steps": max_steps, "epochs": epochs, "steps_per_epoch": self.steps_per_epoch,
            "lr": lr, "optimizer": _name(optimizer), "weight_decay": weight_decay,
            "optimizer_options": _name_values(optimizer_options), "schedule": _name(schedule),
            "schedule_options": _name_values(schedule_options), "warmup_steps": warmup_steps,
            "grad_clip": grad_clip, "amp": self.amp, "device": str(self.device),
            "ckpt_every": ckpt_every, "val_every": val_every, "log_every": log_every,
            "early_stopping_patience": early_stopping_patience, "seed": seed,
            "loss_fn": _name(loss_fn), "step_fn": _name(step_fn),
            "trainable_parameters": sum(p.numel() for p in self.trainable_parameters),
        }

        # training state (all of it goes into checkpoints)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_val_loss = math.inf
        self.bad_validations = 0
        self.elapsed = 0.0
        self.history = History()
        self._window = {"loss": 0.0, "count": 0, "grad_norm": 0.0}
        self._last_val_step: int | None = None
        self._last_lr = self._base_lrs[0]

        self.resumed_from: Path | None = None
        self._final_step: int | None = None  # step at which final.pt was written
        self._last_saved_step: int | None = None
        self._last_checkpoint: Path | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self._started = False
        self._running = False
        self._stop_requested = False
        self._in_update = False
        self._writer = None
        self._history_written_at = 0.0
        self._clock = time.perf_counter()
        self.manifest: dict[str, Any] | None = None

        start_from = self._resume_path(resume)
        if start_from is not None:
            self._load_state(start_from)
        else:
            self._prepare_new_run(resume, overwrite)

    # ------------------------------------------------------------------ public
    def request_stop(self) -> None:
        """Ask :meth:`fit` to return after the current step (it writes a checkpoint first).

        Safe to call from a callback or another thread (a notebook's stop button).
        """
        self._stop_requested = True

    def fit(self) -> History:
        """Train until max_steps/epochs, early stopping or a stop request; return the history.

        Calling it again continues from where it stopped. A KeyboardInterrupt stops the same way
        as :meth:`request_stop`. Raises :class:`NonFiniteLossError` when the loss becomes NaN
        or infinite (the checkpoints written before stay as they are).
        """
        if self._running:
            raise LabkitError("Trainer.fit is already running (in another thread?)")
        self._running = True
        self._stop_requested = False
        try:
            return self._fit()
        finally:
            self._running = False

    # ------------------------------------------------------------------ setup
    def _resume_path(self, resume: str | Path | None) -> Path | None:
        if resume is None:
            return None
        if resume == "auto":
            return latest_checkpoint(self.workdir)
        path = Path(resume)
        if path.is_dir():
            found = latest_checkpoint(path)
            if found is None:
                raise CheckpointError(f"resume={str(resume)!r}: the folder holds no checkpoint "
                                      "to resume from")
            return found
        return path

    def _existing_run_files(self) -> list[Path]:
        files = [p for p in (self.final_path, self.best_path) if p.is_file()]
        if self.checkpoint_dir.is_dir():
            files += sorted(p for p in self.checkpoint_dir.iterdir() if _STEP_FILE.match(p.name))
        return files

    def _prepare_new_run(self, resume: str | Path | None, overwrite: bool) -> None:
        """Check the workdir before a new run: never silently mix two runs in one folder."""
        existing = self._existing_run_files()
        resumable = [p for p in existing if p != self.best_path]
        if overwrite:
            if existing:
                names = ", ".join(str(p.relative_to(self.workdir)) for p in existing)
                warnings.warn(f"{self.workdir}: overwrite=True deletes the earlier run's {names}",
                              stacklevel=3)
            for path in existing + [self.history_path]:
                path.unlink(missing_ok=True)
        elif resume is None and existing:
            names = ", ".join(str(p.relative_to(self.workdir)) for p in existing)
            raise CheckpointError(
                f"{self.workdir} already holds a training run ({names}). Pass resume='auto' to "
                "continue it, overwrite=True to delete it and start again, or another workdir.")
        elif resumable:  # resume="auto" found checkpoints, but none could be loaded
            names = ", ".join(str(p.relative_to(self.workdir)) for p in resumable)
            raise CheckpointError(
                f"{self.workdir} holds checkpoints ({names}) but none of them could be loaded "
                "(see the warnings above). Pass overwrite=True to delete them and start again, "
                "or use another workdir.")

    def _load_state(self, path: Path) -> None:
        expected = self.config["name"] if self.config else None
        checkpoint = load_checkpoint(path, map_location=self.device, expected_model=expected)
        saved_config = checkpoint.get("config")
        if self.config and saved_config and saved_config != self.config:
            raise CheckpointError(
                f"{path} was saved from model config {saved_config}, but this Trainer's model has "
                f"config {self.config}. Build the model with the saved config, or use a new "
                "workdir (or resume=None with overwrite=True).")
        _load_weights(getattr(self.model, "_orig_mod", self.model), checkpoint["model"], path)
        try:
            if checkpoint.get("optimizer") is not None:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.scheduler is not None and checkpoint.get("scheduler") is not None:
                self.scheduler.load_state_dict(checkpoint["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: its optimizer/scheduler state does not fit this Trainer ({exc}); were "
                "other parameters frozen, or another optimizer used?") from exc
        if self.scaler is not None and "scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.step, self.epoch = int(checkpoint["step"]), int(checkpoint["epoch"])
        extra = checkpoint.get("extra") or {}
        state = extra.get("trainer", {})
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        self.bad_validations = int(state.get("bad_validations", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self._window = dict(state.get("window", self._window))
        self._last_val_step = state.get("last_val_step")
        self._last_lr = state.get("last_lr", self._last_lr)
        self.history = History(extra.get("history"))
        self._rng_to_restore = checkpoint.get("rng")
        self.resumed_from = path
        self._last_checkpoint = path
        self._last_saved_step = self.step
        if state.get("final"):
            self._final_step = self.step

    def _start(self) -> None:
        """First fit() of this Trainer: seed a new run, write the manifest, tidy the folder."""
        if self.resumed_from is None:
            seed_everything(self.seed)
        self.manifest = run_manifest(
            seed=self.seed, data_fingerprint=self.data_fingerprint, device=str(self.device),
            model=self.config, trainer=self.settings, start_step=self.step,
            resumed_from=str(self.resumed_from) if self.resumed_from else None)
        manifest = dict(self.manifest)
        if self.resumed_from is not None and self.manifest_path.is_file():
            try:
                earlier = json.loads(self.manifest_path.read_text())
                sessions = earlier.pop("previous_sessions", [])
                manifest["previous_sessions"] = sessions + [earlier]
            except (OSError, ValueError):
                pass
        _write_json(self.manifest_path, manifest)
        for stale in itertools.chain(self.workdir.glob(".*.pt.*.tmp"),
                                     self.checkpoint_dir.glob(".step_*.pt.*.tmp")):
            stale.unlink(missing_ok=True)  # left by a save that was killed
        self._started = True

    def _open_writer(self) -> None:
        if self.tensorboard is False:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            if self.tensorboard:
                raise LabkitError("tensorboard=True needs the tensorboard package "
                                  "(pip install tensorboard)") from exc
            return
        self._writer = SummaryWriter(log_dir=str(self.workdir / "tensorboard"))

    # ------------------------------------------------------------------ loop
    def _finished(self) -> str | None:
        if self.patience is not None and self.bad_validations >= self.patience:
            return "early_stopping"
        if self.max_steps is not None and self.step >= self.max_steps:
            return "max_steps"
        if self.epochs is not None and self.epoch >= self.epochs:
            return "epochs"
        return None

    def _fit(self) -> History:
        reason = self._finished()
        if reason is not None and self._final_step == self.step:
            self._emit("end", {"step": self.step, "epoch": self.epoch, "reason": reason,
                               "best_val_loss": self.history.best_val_loss})
            return self.history
        if not self._started:
            self._start()
        self._open_writer()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress,
                   desc=f"train {self.workdir.name}", unit="step", dynamic_ncols=True)
        self._clock = time.perf_counter()
        try:
            reason = self._run(bar)
            if reason in ("max_steps", "epochs", "early_stopping"):
                self._finish()
            else:
                self._save_periodic("stop")
        except KeyboardInterrupt:
            reason = "interrupted"
            if self._in_update:
                self._in_update = False
                warnings.warn(
                    f"interrupted in the middle of a parameter update at step {self.step}: no "
                    f"checkpoint written for it; the last one is {self._last_checkpoint}",
                    stacklevel=2)
            else:
                self._save_periodic("stop")
        except Exception:
            self._save_history(force=True)  # the curve up to the failure is worth keeping
            raise
        finally:
            self._tick()
            bar.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._save_history(force=True)
        self._emit("end", {"step": self.step, "epoch": self.epoch, "reason": reason,
                           "best_val_loss": self.history.best_val_loss})
        return self.history

    def _tick(self) -> None:
        now = time.perf_counter()
        self.elapsed += now - self._clock
        self._clock = now

    def _run(self, bar: Any) -> str:
        while True:
            reason = self._finished()
            if reason is not None:
                return reason
            if self._stop_requested:
                return "stopped"
            for batch in self._epoch_batches():
                self._train_step(batch, bar)
                epoch_done = (self.steps_per_epoch is not None
                              and self.batch_in_epoch >= self.steps_per_epoch)
                if epoch_done:
                    self._end_epoch()
                self._after_step()
                if epoch_done or self._stop_requested or self._finished():
                    break
            else:
                self._end_epoch()

    def _epoch_batches(self) -> Iterator[Any]:
        """The batches of the current epoch from position ``batch_in_epoch`` on."""
        _set_epoch(self.train_data, self.epoch)
        # The data order must depend on (seed, epoch) only, so that a resumed run sees the same
        # batches: seed torch's CPU generator while the iterator is created and its first batch
        # drawn (a RandomSampler draws its permutation seed then), then put the stream back.
        skip = self.batch_in_epoch
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(_epoch_seed(self.seed, self.epoch))
            iterator = iter(self.train_data)
            head = list(itertools.islice(iterator, 1))
        if not head and skip == 0:
            raise LabkitError(
                f"train_data yielded no batches in epoch {self.epoch}: pass a re-iterable (a list, "
                "a Dataset or a DataLoader), not a generator that is used up after one pass")
        if skip:
            # deterministic data makes skipping the batches seen before the checkpoint exact
            head = []
            for _ in itertools.islice(iterator, skip - 1):
                pass
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        return itertools.chain(head, iterator)

    def _train_step(self, batch: Any, bar: Any) -> None:
        self.model.train()
        for module in self.frozen_modules:
            module.eval()
        batch = _to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            loss = _compute_loss(self.model, batch, self.loss_fn, self.step_fn, self.device)
        value = float(loss.detach().float())
        if not math.isfinite(value):
            where = (f"the last good checkpoint is {self._last_checkpoint}"
                     if self._last_checkpoint else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"the training loss became {value} at step {self.step + 1} (epoch {self.epoch}); "
                f"{where}. Try a lower lr (now {self.optimizer.param_groups[0]['lr']:.3g}), "
                "grad_clip=1.0, or check the data for NaN/inf.")
        if not loss.requires_grad:
            raise LabkitError("the loss does not depend on any trainable parameter (was it "
                              "computed under torch.no_grad() or from detached tensors?)")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        grad_norm = None
        if self.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = float(nn.utils.clip_grad_norm_(self.trainable_parameters, self.grad_clip))
        if self._plateau and self.step < self.warmup_steps:
            for group, base in zip(self.optimizer.param_groups, self._base_lrs):
                group["lr"] = base * (self.step + 1) / self.warmup_steps
        lr = self.optimizer.param_groups[0]["lr"]
        # From here to the end of the bookkeeping the parameters and the counters disagree: an
        # interrupt in this window must not write a checkpoint.
        self._in_update = True
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None and not self._plateau:
            with warnings.catch_warnings():
                # the scaler skips optimizer.step on overflow, which makes torch warn here
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += 1
        self._window["loss"] += value
        self._window["count"] += 1
        if grad_norm is not None:
            self._window["grad_norm"] += grad_norm
        self._last_lr = lr
        self._in_update = False
        bar.update(1)
        if self.step % self.log_every == 0:
            self._log(bar)

    def _after_step(self) -> None:
        if self.val_every is not None and self.val_data is not None \
                and self.step % self.val_every == 0:
            self._validate()
        if self.ckpt_every is not None and self.step % self.ckpt_every == 0:
            self._save_periodic("periodic")

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        if self.val_every is None and self.val_data is not None:
            self._validate()

    def _finish(self) -> None:
        if self._window["count"]:
            self._log(None)
        if self.val_data is not None and self._last_val_step != self.step:
            self._validate()
        self._save(self.final_path, "final")

    # ------------------------------------------------------------------ logging, validation
    def _log(self, bar: Any) -> None:
        self._tick()
        count = self._window["count"]
        record = {"step": self.step, "epoch": self.epoch,
                  "train_loss": self._window["loss"] / count, "lr": self._last_lr,
                  "time": round(self.elapsed, 3)}
        if self.grad_clip is not None:
            record["grad_norm"] = self._window["grad_norm"] / count
        for key, value in record.items():
            self.history.setdefault(key, []).append(value)
        self._window = {"loss": 0.0, "count": 0, "grad_norm": 0.0}
        if bar is not None:
            bar.set_postfix(loss=f"{record['train_loss']:.4g}", lr=f"{record['lr']:.2g}",
                            refresh=False)
        if self._writer is not None:
            self._writer.add_scalar("train/loss", record["train_loss"], self.step)
            self._writer.add_scalar("train/lr", record["lr"], self.step)
        self._save_history()
        self._emit("log", record)

    def _validate(self) -> None:
        loss = evaluate_loss(self.model, self.val_data, self.loss_fn, self.device,
                             step_fn=self.step_fn, amp=self.amp, seed=self.seed)
        self._last_val_step = self.step
        self.history["val_step"].append(self.step)
        self.history["val_loss"].append(loss)
        improved = loss < self.best_val_loss
        if improved:
            self.best_val_loss = loss
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        if self._plateau and self.step >= self.warmup_steps:
            self.scheduler.step(loss)
        if self._writer is not None:
            self._writer.add_scalar("val/loss", loss, self.step)
        self._emit("validate", {"step": self.step, "epoch": self.epoch, "val_loss": loss,
                                "best_val_loss": self.best_val_loss, "improved": improved})
        if improved:
            self._save(self.best_path, "best")
        self._save_history(force=True)

    def _save_history(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._history_written_at >= _HISTORY_WRITE_INTERVAL_S:
            self.history.save(self.history_path)
            self._history_written_at = now

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback(self, event, info)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, path: Path, kind: str) -> Path:
        self._tick()
        extra = {
            "trainer": {
                "batch_in_epoch": self.batch_in_epoch, "best_val_loss": self.best_val_loss,
                "bad_validations": self.bad_validations, "elapsed": self.elapsed,
                "window": dict(self._window), "last_val_step": self._last_val_step,
                "last_lr": self._last_lr, "final": kind == "final", "kind": kind,
            },
            "history": dict(self.history),
        }
        save_checkpoint(path, model=self.model, step=self.step, epoch=self.epoch,
                        optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                        config=self.config, manifest=self.manifest, extra=extra)
        if kind != "best":
            self._last_checkpoint = path
            self._last_saved_step = self.step
        if kind == "final":
            self._final_step = self.step
        self._emit("checkpoint", {"step": self.step, "epoch": self.epoch, "path": str(path),
                                  "kind": kind})
        return path

    def _save_periodic(self, kind: str) -> None:
        if self._last_saved_step == self.step:
            return
        self._save(self.checkpoint_dir / f"step_{self.step:07d}.pt", kind)
        if self.keep_checkpoints is not None:
            periodic = sorted((int(m.group(1)), p) for p in self.checkpoint_dir.iterdir()
                              if (m := _STEP_FILE.match(p.name)))
            for _, old in periodic[:-self.keep_checkpoints]:
                old.unlink(missing_ok=True)


def _name_values(options: dict[str, Any] | None) -> dict[str, Any] | None:
    if options is None:
        return None
    return {key: value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)
            for key, value in options.items()}
