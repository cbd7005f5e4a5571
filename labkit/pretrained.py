"""Shipped pretrained separators: a small registry of checkpoints in ``data/models/``.

The models are tiny (a few MB in all, weights stored as float16) and trained on the built-in
toy-MUSDB set only, so that anyone can rebuild them: each entry of ``data/models/manifest.json``
names its file, the file's sha256, the sample rate, channels and sources of the model, its size,
the exact ``labkit train pretrained NAME`` command that reproduces it, and the scores it reached::

    {"format": 1,
     "defaults": {"separate": "stems-22k", "vocals": "vocals-22k", "stems": "stems-22k"},
     "models": {"vocals-22k": {"file": "vocals-22k.pt", "sha256": "...", "sample_rate": 22050,
                               "channels": 1, "sources": ["vocals", "accompaniment"], ...}}}

>>> from labkit.pretrained import available, load_pretrained, resolve_model
>>> available()                              # the shipped names
>>> model = load_pretrained("vocals-22k")    # sha256 checked, float32, eval mode
>>> model = resolve_model("runs/x/best.pt")  # a name, a checkpoint file or a run folder

Every load checks the file's sha256 against the manifest and refuses a file that does not match
(a damaged download, a file replaced by hand) with a :class:`~labkit.errors.CheckpointError`
that says how to get it back. The files are plain labkit checkpoints (see
:mod:`labkit.checkpoint`), read with ``torch.load(weights_only=True)``.

Where the models live: ``$LABKIT_MODELS`` if set, else ``data/models`` of the labkit checkout
(:func:`labkit.core.repo_root`).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labkit.errors import CheckpointError, LabkitError

__all__ = [
    "MANIFEST_NAME", "RECIPES", "TASKS", "available", "cli_main", "default_model",
    "export_pretrained", "load_pretrained", "manifest", "model_info", "models_dir",
    "resolve_model", "sha256_of", "verify",
]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
TASKS = ("separate", "vocals", "stems")
"""What a default model is chosen for: ``separate`` (the ``labkit separate`` command),
``vocals`` (vocals/accompaniment, what fine-tuning starts from) and ``stems`` (four stems)."""

_CHUNK = 1 << 20


# --------------------------------------------------------------------------------- where
def models_dir() -> Path:
    """The folder of the shipped models: ``$LABKIT_MODELS``, else ``<checkout>/data/models``.

    Raises :class:`~labkit.errors.CheckpointError` when neither exists.
    """
    env = os.environ.get("LABKIT_MODELS")
    if env:
        return Path(env).expanduser()
    from labkit.core import repo_root

    root = repo_root()
    if root is not None and (root / "data" / "models").is_dir():
        return root / "data" / "models"
    raise CheckpointError(
        "cannot find the shipped models: labkit is not running from its checkout (no "
        "data/models beside pyproject.toml) and LABKIT_MODELS is not set. Point LABKIT_MODELS "
        "at a folder holding manifest.json and the .pt files (data/models of the labkit "
        "repository).")


def _writable_models_dir() -> Path:
    """Where :func:`export_pretrained` writes by default: like :func:`models_dir`, but the
    checkout's ``data/models`` need not exist yet."""
    from labkit.core import repo_root

    if os.environ.get("LABKIT_MODELS") or repo_root() is None:
        return models_dir()
    return repo_root() / "data" / "models"


def _manifest_path(folder: Path | None) -> Path:
    return (folder if folder is not None else models_dir()) / MANIFEST_NAME


def manifest(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The parsed ``manifest.json`` of ``folder`` (default :func:`models_dir`).

    A missing folder or manifest gives an empty registry ``{"format": 1, "defaults": {},
    "models": {}}``; a manifest that is not valid JSON raises CheckpointError naming it.
    """
    path = _manifest_path(Path(folder) if folder is not None else None)
    if not path.is_file():
        return {"format": FORMAT_VERSION, "defaults": {}, "models": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable JSON manifest ({exc}); restore it from "
                              "the labkit repository (git checkout data/models)") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{path} has no 'models' table; restore it from the labkit "
                              "repository (git checkout data/models)")
    data.setdefault("defaults", {})
    return data


def available(folder: str | os.PathLike | None = None) -> list[str]:
    """The names of the shipped models, sorted (empty when none are shipped)."""
    return sorted(manifest(folder)["models"])


def model_info(name: str, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest entry of the shipped model ``name`` (a copy), with ``"name"`` and
    ``"path"`` added. Raises CheckpointError for an unknown name, listing the known ones."""
    data = manifest(folder)
    entry = data["models"].get(name)
    if entry is None:
        known = ", ".join(sorted(data["models"])) or "none are shipped"
        raise CheckpointError(f"{name!r} is not a shipped model (known: {known}); give one of "
                              "those names, or the path of a checkpoint file or run folder")
    info = copy.deepcopy(entry)
    info["name"] = name
    base = Path(folder) if folder is not None else models_dir()
    info["path"] = str(base / entry["file"])
    return info


def default_model(task: str = "separate", folder: str | os.PathLike | None = None) -> str:
    """The name of the shipped model used for ``task`` (one of :data:`TASKS`) when none is
    named. Raises CheckpointError when the manifest names none."""
    if task not in TASKS:
        raise LabkitError(f"task={task!r}; use one of {', '.join(TASKS)}")
    name = manifest(folder)["defaults"].get(task)
    if name is None:
        raise CheckpointError(f"no shipped model is the default for {task!r}: data/models/"
                              "manifest.json has no such entry; name a model or a checkpoint")
    return name


# --------------------------------------------------------------------------------- checking
def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Check that the shipped model ``name`` is present and its sha256 matches the manifest.

    Returns its path. Raises CheckpointError naming the file, the expected and the found hash,
    and how to restore it.
    """
    info = model_info(name, folder)
    path = Path(info["path"])
    if not path.is_file():
        raise CheckpointError(f"the shipped model {name!r} should be at {path}, which is missing; "
                              "restore it with `git checkout data/models` or rebuild it with "
                              f"`{info.get('train_command', 'labkit train pretrained ' + name)}`")
    found = sha256_of(path)
    if found != info["sha256"]:
        raise CheckpointError(
            f"{path}: sha256 {found} does not match the manifest's {info['sha256']} for the "
            f"shipped model {name!r}: the file is damaged or was replaced. Restore it with "
            "`git checkout data/models`, or rebuild it with "
            f"`{info.get('train_command', 'labkit train pretrained ' + name)}` (which also "
            "updates the manifest).")
    return path


# --------------------------------------------------------------------------------- loading
def load_pretrained(name: str, device: Any = "cpu",
                    folder: str | os.PathLike | None = None) -> Any:
    """The shipped model ``name``, rebuilt, with float32 weights, on ``device``, in eval mode.

    The sha256 is checked first (see :func:`verify`); the model is a
    :class:`labkit.separate.Separator` (``sample_rate``, ``channels``, ``sources``) ready for
    :func:`labkit.separate.separate`. Its manifest entry is attached as ``model.pretrained``.
    """
    from labkit.checkpoint import load_model

    path = verify(name, folder)
    model = load_model(path, map_location="cpu").float()
    model.pretrained = model_info(name, folder)
    return model.to(device).eval()


def resolve_model(name_or_path: str | os.PathLike | None = None, task: str = "separate",
                  device: Any = "cpu", folder: str | os.PathLike | None = None) -> Any:
    """A separation model from a shipped name, a checkpoint file or a run folder.

    ``None`` gives the default shipped model for ``task`` (see :func:`default_model`). A run
    folder (from :class:`labkit.train.Trainer`) gives its ``best.pt``, else its newest
    checkpoint. A name that is neither shipped nor an existing path raises CheckpointError
    listing the shipped names.
    """
    from labkit.checkpoint import latest_checkpoint, load_model

    if name_or_path is None:
        return load_pretrained(default_model(task, folder), device, folder)
    text = str(name_or_path)
    try:
        shipped = available(folder)
    except CheckpointError:
        shipped = []  # no models folder: only paths can work
    if isinstance(name_or_path, str) and text in shipped:
        return load_pretrained(text, device, folder)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        best = path / "best.pt"
        found = best if best.is_file() else latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path} is a folder without checkpoints (no best.pt, final.pt "
                                  "or checkpoints/step_*.pt); give a checkpoint file")
        path = found
    if path.is_file():
        return _as_separator(load_model(path, map_location="cpu")).float().to(device).eval()
    raise CheckpointError(f"--model {text!r}: neither a shipped model (shipped: "
                          f"{', '.join(shipped) or 'none'}) nor an existing checkpoint file or "
                          "run folder")


def _as_separator(model: Any) -> Any:
    """A bare spectrogram U-Net (what ``labkit train specunet`` saves) wrapped into the
    separation protocol with notebook 02's STFT (1024/256 at 22.05 kHz, mono); other models
    as they are."""
    from labkit.models.spec_unet import SpecUNet, SpecUNetSeparator

    if isinstance(model, SpecUNet):
        from labkit.vocals import HOP_LENGTH, N_FFT, SAMPLE_RATE

        return SpecUNetSeparator.from_unet(model, sample_rate=SAMPLE_RATE, n_fft=N_FFT,
                                           hop_length=HOP_LENGTH)
    return model


# --------------------------------------------------------------------------------- exporting
def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    from labkit.checkpoint import atomic_write

    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _half_state(model: Any) -> dict[str, Any]:
    """The state dict with floating tensors stored as float16 (half the bytes); integer
    buffers (batch-norm counters) unchanged. :func:`load_pretrained` converts back."""
    import torch

    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else
                v.detach().cpu()).clone() for k, v in model.state_dict().items()}


def export_pretrained(model: Any, name: str, *, folder: str | os.PathLike | None = None,
                      train_command: str, description: str = "", data: str = "",
                      metrics: dict[str, Any] | None = None, defaults: Sequence[str] = (),
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` as the shipped model ``name`` and record it in the manifest.

    The file ``<folder>/<name>.pt`` is a labkit checkpoint (config, float16 weights, no
    optimizer state), written atomically; the manifest entry holds its sha256, size, sample
    rate, channels, sources, parameter count, ``train_command``, ``description``, ``data``,
    ``metrics`` and ``extra``. ``defaults``: tasks (:data:`TASKS`) this model becomes the default
    for. Returns the entry.
    """
    import torch

    from labkit.checkpoint import atomic_write
    from labkit.core import run_manifest
    from labkit.models import _plain, model_config

    for task in defaults:
        if task not in TASKS:
            raise LabkitError(f"defaults: {task!r} is not a task; use {', '.join(TASKS)}")
    for attribute in ("sample_rate", "channels", "sources"):
        if not hasattr(model, attribute):
            raise LabkitError(f"export_pretrained: the model lacks {attribute}; a shipped model "
                              "must follow labkit.separate.Separator")
    folder = Path(folder) if folder is not None else _writable_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config = model_config(model)
    checkpoint = {
        "labkit_checkpoint": 1, "model_name": config["name"], "model": _half_state(model),
        "optimizer": None, "scheduler": None, "step": 0, "epoch": 0, "config": config,
        "manifest": _plain(run_manifest(pretrained=name), "manifest"), "extra": {}, "rng": None,
    }
    path = folder / f"{name}.pt"
    atomic_write(path, lambda f: torch.save(checkpoint, f))
    entry = {
        "file": path.name,
        "sha256": sha256_of(path),
        "size_bytes": path.stat().st_size,
        "model": config["name"],
        "sample_rate": int(model.sample_rate),
        "channels": int(model.channels),
        "sources": list(model.sources),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": "float16",
        "description": description,
        "data": data,
        "train_command": train_command,
        "metrics": _plain(metrics or {}, "metrics"),
        "created": datetime.date.today().isoformat(),
        **_plain(extra or {}, "extra"),
    }
    table = manifest(folder)
    table["format"] = FORMAT_VERSION
    table["models"][name] = entry
    table["models"] = dict(sorted(table["models"].items()))
    for task in defaults:
        table["defaults"][task] = name
    _write_json_atomic(_manifest_path(folder), table)
    return entry


# --------------------------------------------------------------------------------- recipes
RECIPES: dict[str, dict[str, Any]] = {
    "vocals-22k": {
        "kind": "spec_unet", "sample_rate": 22050, "steps": 1500, "batch_size": 8, "lr": 1e-3,
        "defaults": ("vocals",),
        "description": "spectrogram U-Net of notebook 02 (4 levels, 16->128 channels, batch norm, "
                       "log input), 1024/256 STFT at 22.05 kHz, mono: vocals and accompaniment",
    },
    "vocals-44k": {
        "kind": "spec_unet", "sample_rate": 44100, "steps": 1500, "batch_size": 8, "lr": 1e-3,
        "defaults": (),
        "description": "spectrogram U-Net of notebook 02 (4 levels, 16->128 channels, batch norm, "
                       "log input), 1024/256 STFT at 44.1 kHz, mono: vocals and accompaniment",
    },
    "stems-22k": {
        "kind": "wave_unet", "steps": 1000, "batch_size": 8, "lr": 1e-3,
        "segment_seconds": 2.0, "defaults": ("separate", "stems"),
        "config": {"sources": ["vocals", "drums", "bass", "other"], "channels": 2,
                   "sample_rate": 22050, "filter_length": 512, "stride": 256, "n_filters": 512,
                   "filterbank_init": "stft", "depth": 4, "width": 32, "growth": 1.5,
                   "kernel_size": 5, "norm": "batch", "chunk_seconds": 8.0},
        "description": "waveform U-Net of notebook 03 (STFT-initialised 512-filter bank at hop "
                       "256, 4 levels, 32->108 channels, batch norm) at 22.05 kHz, stereo: "
                       "vocals, drums, bass, other",
    },
    "stems-44k": {
        "kind": "wave_unet", "steps": 1000, "batch_size": 8, "lr": 1e-3,
        "segment_seconds": 2.0, "defaults": (),
        "config": {"sources": ["vocals", "drums", "bass", "other"], "channels": 2,
                   "sample_rate": 44100, "filter_length": 1024, "stride": 512,
                   "n_filters": 1024, "filterbank_init": "stft", "depth": 4, "width": 32,
                   "growth": 1.5, "kernel_size": 5, "norm": "batch", "chunk_seconds": 8.0},
        "description": "waveform U-Net of notebook 03 (STFT-initialised 1024-filter bank at hop "
                       "512, 4 levels, 32->108 channels, batch norm) at 44.1 kHz, stereo: "
                       "vocals, drums, bass, other (the full band; twice the work of stems-22k)",
    },
}
"""How each shipped model is trained by ``labkit train pretrained NAME`` (on toy-MUSDB "full")."""


def _train_spec_unet_recipe(name: str, recipe: dict[str, Any], args: argparse.Namespace
                            ) -> tuple[Any, dict[str, Any]]:
    """Train the spectrogram U-Net of ``recipe``; returns (separator, metrics)."""
    from labkit.data import find_tracks, toy
    from labkit.models.spec_unet import SpecUNetSeparator
    from labkit.vocals import (
        RECIPE,
        evaluate_vocals,
        evaluation_tracks,
        load_stems,
        train_spec_unet,
    )

    root = toy.ensure("full", progress=not args.no_progress)
    rate = recipe["sample_rate"]
    train = load_stems(find_tracks(root, split="train"), sample_rate=rate)
    valid = load_stems(find_tracks(root, split="valid"), sample_rate=rate)
    steps = args.steps if args.steps is not None else recipe["steps"]
    result = train_spec_unet(
        args.workdir / name, model_config=dict(RECIPE), train_songs=train, valid_songs=valid,
        max_steps=steps, batch_size=recipe["batch_size"], lr=recipe["lr"],
        device="cpu" if args.cpu else None,
        seed=args.seed, resume="auto" if args.resume else None, overwrite=args.overwrite,
        progress=not args.no_progress, threads=args.threads)
    separator = SpecUNetSeparator.from_unet(result.model, sample_rate=rate)
    metrics: dict[str, Any] = {"train_steps": result.steps,
                               "train_seconds": round(result.seconds, 1)}
    if not args.no_evaluate:
        tracks = evaluation_tracks(find_tracks(root, split="test"), sample_rate=rate)
        scores = evaluate_vocals({"model": separator}, tracks, metrics=("sdr",),
                                 sample_rate=rate, progress=not args.no_progress)["sdr"]
        metrics["test_vocals_sdr_db"] = round(float(scores["model"]["median"]["vocals"]), 2)
        metrics["test_oracle_vocals_sdr_db"] = round(
            float(scores["IRM2 oracle"]["median"]["vocals"]), 2)
        metrics["metric"] = ("museval SDR (v4, median over 1 s frames), median over the 10 "
                             "toy-MUSDB test tracks, mono at the model rate; oracle: IRM2, same "
                             "STFT")
    return separator, metrics


def _train_wave_unet_recipe(name: str, recipe: dict[str, Any], args: argparse.Namespace
                            ) -> tuple[Any, dict[str, Any]]:
    """Train the four-stem waveform U-Net of ``recipe``; returns (model, metrics)."""
    from labkit.data import toy
    from labkit.stems import evaluate_stems, evaluation_tracks, train_waveunet

    root = toy.ensure("full", progress=not args.no_progress)
    steps = args.steps if args.steps is not None else recipe["steps"]
    result = train_waveunet(
        args.workdir / name, model_config={"name": "wave_unet", **recipe["config"]}, root=root,
        segment_seconds=recipe["segment_seconds"], batch_size=recipe["batch_size"],
        max_steps=steps, lr=recipe["lr"],
        device="cpu" if args.cpu else None, seed=args.seed,
        resume="auto" if args.resume else None, overwrite=args.overwrite,
        progress=not args.no_progress, threads=args.threads)
    metrics: dict[str, Any] = {"train_steps": result.steps,
                               "train_seconds": round(result.seconds, 1)}
    if not args.no_evaluate:
        tracks = evaluation_tracks(root)
        scores = evaluate_stems({"model": result.model}, tracks, do_nothing=False,
                                progress=not args.no_progress)
        metrics["test_sdr_db"] = {k: round(float(v), 2)
                                  for k, v in scores["model"]["median"].items()}
        metrics["test_oracle_sdr_db"] = {k: round(float(v), 2)
                                         for k, v in scores["IRM2 oracle"]["median"].items()}
        metrics["metric"] = ("museval SDR (v4, median over 1 s frames), median over the 10 "
                             "toy-MUSDB test tracks at 44.1 kHz stereo; oracle: IRM2, 4096/1024 "
                             "STFT")
    return result.model, metrics


def build_cli_parser(prog: str = "labkit train pretrained") -> argparse.ArgumentParser:
    """The options of ``labkit train pretrained NAME``."""
    p = argparse.ArgumentParser(
        prog=prog, description="Train one of the shipped models on the built-in toy-MUSDB set "
        "with its fixed recipe, then write it (float16) into the models folder and update "
        "manifest.json (sha256, size, metrics, this command).")
    p.add_argument("name", choices=sorted(RECIPES), help="which shipped model to rebuild")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the recipe's; other values are not the "
                        "shipped model)")
    p.add_argument("--workdir", type=Path, default=Path("runs/pretrained"),
                   help="run folders go to WORKDIR/NAME (default runs/pretrained)")
    p.add_argument("--out", type=Path, default=None,
                   help="models folder to write (default: the checkout's data/models)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cpu", action="store_true",
                   help="train on the CPU even when a GPU is there (the shipped files were)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="start the run folder again")
    p.add_argument("--no-evaluate", action="store_true", help="skip the test-set scores")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Run ``labkit train pretrained NAME`` with ``argv``; returns the exit status."""
    args = build_cli_parser().parse_args(argv)
    recipe = RECIPES[args.name]
    trainers = {"spec_unet": _train_spec_unet_recipe, "wave_unet": _train_wave_unet_recipe}
    model, metrics = trainers[recipe["kind"]](args.name, recipe, args)
    command = f"labkit train pretrained {args.name}"
    if args.steps is not None and args.steps != recipe["steps"]:
        command += f" --steps {args.steps}"
    if args.seed:
        command += f" --seed {args.seed}"
    entry = export_pretrained(
        model, args.name, folder=args.out, train_command=command,
        description=recipe["description"], data="toy-MUSDB 'full' preset (labkit.data.toy, "
        "40 train tracks, valid = every 5th), generated on first use",
        metrics=metrics, defaults=recipe["defaults"])
    print(f"wrote {args.name}: {entry['size_bytes'] / 1e6:.2f} MB, sha256 {entry['sha256'][:12]}, "
          f"metrics {metrics}")
    return 0
