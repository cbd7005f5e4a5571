"""Checkpoints: one file per save, written atomically, loaded without running foreign code.

A labkit checkpoint is a dict saved with ``torch.save``::

    {"labkit_checkpoint": 1, "model_name": "spec_unet", "model": state_dict, "optimizer": ...,
     "scheduler": ..., "scaler": ... (only with AMP), "step": int, "epoch": int,
     "config": {"name": "spec_unet", ...}, "manifest": {...}, "extra": {...}, "rng": {...}}

Everything in it is tensors or plain Python values, so :func:`load_checkpoint` can use
``torch.load(weights_only=True)``: a file that tries to run code when unpickled is refused with a
:class:`~labkit.errors.CheckpointError` instead of being executed. Saving writes a temporary file in
the same folder, flushes it to disk and renames it over the target, so a crash mid-save leaves the
previous file intact.

File names in a run folder (see :class:`labkit.train.Trainer`): ``checkpoints/step_0001000.pt``
(periodic), ``best.pt`` (best validation loss) and ``final.pt`` (end of training).
"""
from __future__ import annotations

import os
import pickle
import random
import re
import secrets
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from labkit.errors import CheckpointError, LabkitError
from labkit.models import _plain, build_model, model_config

__all__ = [
    "FORMAT_VERSION", "atomic_write", "capture_rng_state", "latest_checkpoint", "load_checkpoint",
    "load_model", "restore_rng_state", "save_checkpoint",
]

FORMAT_VERSION = 1
_MARKER = "labkit_checkpoint"
_STEP_NAME = re.compile(r"^step_(\d+)\.pt$")


# ----------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """The states of torch's (CPU and CUDA), NumPy's and Python's global random generators.

    Stored as tensors and plain values so that a ``weights_only`` load can read them back.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(python_state),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generator states saved by :func:`capture_rng_state`.

    The CUDA states are restored only when the same number of GPUs is visible.
    """
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].cpu().numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]),
                     python_state["gauss_next"]))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ----------------------------------------------------------------------------------- saving
def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename it to ``path``.

    A crash or an exception at any point leaves the previous ``path`` as it was. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name starts with a dot and ends in .tmp so that latest_checkpoint never
    # mistakes a half-written file for a checkpoint; "x" mode respects the umask, unlike mkstemp.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile's wrapper prefixes every key


def save_checkpoint(path: str | Path, *, model: nn.Module, step: int, epoch: int = 0,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    scaler: Any = None, config: dict[str, Any] | None = None,
                    manifest: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    rng_state: bool = True) -> Path:
    """Write a labkit checkpoint of ``model`` (and training state) to ``path`` atomically.

    ``config`` defaults to :func:`labkit.models.model_config` of a registered model (None
    otherwise: such a checkpoint can resume training but :func:`load_model` cannot rebuild it).
    ``config``, ``manifest`` and ``extra`` must hold plain values (and tensors in ``extra``).
    ``rng_state`` stores the global random generators' states for an exact resume.
    Returns the path written.
    """
    path = Path(path)
    model = _unwrap(model)
    if config is None:
        try:
            config = model_config(model)
        except LabkitError:
            config = None
    config = _plain(config, "save_checkpoint: config")
    manifest = _plain(manifest, "save_checkpoint: manifest")
    extra = _plain(extra, "save_checkpoint: extra", allow_tensors=True)
    checkpoint: dict[str, Any] = {
        _MARKER: FORMAT_VERSION,
        "model_name": config.get("name") if config else None,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "config": config,
        "manifest": manifest,
        "extra": extra or {},
        "rng": capture_rng_state() if rng_state else None,
    }
    if scaler is not None:
        checkpoint["scaler"] = scaler.state_dict()
    _atomic_torch_save(checkpoint, path)
    return path


# ----------------------------------------------------------------------------------- loading
def _torch_load(path: Path, map_location: Any, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a CheckpointError."""
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such checkpoint file. Check the path, or train the model first "
            "(a run folder keeps its checkpoints in checkpoints/, best.pt and final.pt).")
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint file; use "
            "labkit.checkpoint.latest_checkpoint(folder) to find the newest checkpoint in a run.")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files; the error below says more
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{path} is not a labkit checkpoint: it contains a Python object "
                f"({found.group(1)}) that could run code when loaded, so it was refused "
                "(labkit loads with torch.load(weights_only=True)). Use a checkpoint written by "
                "labkit.checkpoint.save_checkpoint or the Trainer.") from exc
        raise CheckpointError(
            f"{path} is damaged or not a PyTorch checkpoint ({_first_line(text)}). Delete it and "
            "use another checkpoint of the run, or train again.") from exc
    except Exception as exc:  # truncated zip, random bytes, empty file, ...
        raise CheckpointError(
            f"{path} is damaged or not a PyTorch checkpoint ({type(exc).__name__}: "
            f"{_first_line(str(exc)) or 'unexpected end of file'}). A save interrupted before "
            "labkit wrote files atomically, or a copy that did not finish, looks like this. Delete "
            "it and use another checkpoint of the run, or train again.") from exc


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Weights only load failed"):
            return line[:200]
    return ""


def _validate(checkpoint: Any, path: Path, expected_model: str | None) -> dict[str, Any]:
    if not isinstance(checkpoint, dict) or _MARKER not in checkpoint:
        if isinstance(checkpoint, dict) and checkpoint and all(
                isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise CheckpointError(
                f"{path} is a bare state_dict ({len(checkpoint)} tensors), not a labkit "
                "checkpoint: it does not say which model it belongs to. Load it with "
                "model.load_state_dict(torch.load(path, weights_only=True)) into a model you "
                "built yourself, or save it with labkit.checkpoint.save_checkpoint.")
        what = (f"a dict with keys {sorted(map(str, checkpoint))[:8]}"
                if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}")
        raise CheckpointError(
            f"{path} is not a labkit checkpoint (it holds {what}, without the "
            f"'{_MARKER}' marker). Use a file written by labkit.checkpoint.save_checkpoint.")
    version = checkpoint[_MARKER]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version!r}; this labkit reads format "
            f"{FORMAT_VERSION} and older. Update labkit.")
    name = checkpoint.get("model_name")
    if expected_model is not None and name != expected_model:
        raise CheckpointError(
            f"{path} is a checkpoint of model {name!r}, not {expected_model!r}. Pick a "
            f"checkpoint of {expected_model!r} (or a new run folder for this model).")
    return checkpoint


def load_checkpoint(path: str | Path, map_location: Any = "cpu",
                    expected_model: str | None = None) -> dict[str, Any]:
    """Load and check a labkit checkpoint with ``torch.load(weights_only=True)``.

    Returns the checkpoint dict (see the module docstring) with ``"path"`` added. Raises
    :class:`~labkit.errors.CheckpointError` naming the file and what to do when it is missing,
    truncated or damaged, not a labkit checkpoint (a bare state_dict, a pickle of Python objects
    that could run code), or a checkpoint of another model than ``expected_model``.
    """
    path = Path(path)
    checkpoint = _validate(_torch_load(path, map_location), path, expected_model)
    checkpoint["path"] = str(path)
    return checkpoint


def _describe_keys(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_model(path: str | Path, expected_model: str | None = None,
               map_location: Any = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint was saved from and load its weights (strictly).

    The model is built with :func:`labkit.models.build_model` from the stored config, moved to
    ``map_location`` and put in eval mode. Raises :class:`~labkit.errors.CheckpointError` when the
    checkpoint has no config, names an unknown model, or its weights do not fit the model (naming
    the missing and unexpected keys).
    """
    checkpoint = load_checkpoint(path, map_location=map_location, expected_model=expected_model)
    config = checkpoint.get("config")
    if not config:
        raise CheckpointError(
            f"{path} does not store a model config (its model was not registered with "
            "@labkit.models.register_model), so the model cannot be rebuilt; build the model "
            "yourself and call model.load_state_dict(load_checkpoint(path)['model']).")
    try:
        model = build_model(config)
    except LabkitError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    _load_weights(model, checkpoint["model"], path)
    if map_location is not None and not callable(map_location) and not isinstance(
            map_location, dict):
        model.to(map_location)
    return model.eval()


def _load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict`` that reports missing, unexpected and misshapen keys clearly."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe_keys(unexpected)}")
        if misshapen:
            parts.append(f"shapes differ (checkpoint vs model): {_describe_keys(misshapen)}")
        raise CheckpointError(
            f"{path}: the weights do not fit the model {type(model).__qualname__} ("
            + "; ".join(parts) + "). The checkpoint was saved from a different architecture or "
            "config.")
    model.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------------- finding
def _candidates(run_dir: Path) -> list[Path]:
    found = []
    for folder in (run_dir / "checkpoints", run_dir):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if _STEP_NAME.match(p.name) and p.is_file()]
    final = run_dir / "final.pt"
    if final.is_file():
        found.append(final)
    return found


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint of a run folder, or None when it has none.

    Looks at ``checkpoints/step_*.pt``, ``step_*.pt`` and ``final.pt`` (not ``best.pt``, which
    is an older state of the run) and ranks them by the step stored inside; at the same step
    ``final.pt`` wins. Temporary files of an interrupted save are ignored; damaged files are
    skipped with a warning.
    """
    run_dir = Path(run_dir)
    best: tuple[int, int, Path] | None = None
    for path in _candidates(run_dir):
        try:
            # mmap reads only the pickled metadata; tensors stay on disk
            checkpoint = _validate(_torch_load(path, "cpu", mmap=True), path, None)
        except CheckpointError as exc:
            warnings.warn(f"latest_checkpoint: skipping {path}: {exc}", stacklevel=2)
            continue
        rank = (int(checkpoint["step"]), int(path.name == "final.pt"), path)
        del checkpoint
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best else None
