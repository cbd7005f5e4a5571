"""A tiny super-resolution training config, shared by the CPU and the CUDA tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit import superres

TINY_MODEL = {"n_fft": 256, "hop_length": 64, "channels": 8, "dilations": [1], "repeats": 1,
              "timesteps": 20}


def tiny_training_config(data_root: Path, **train: Any) -> dict[str, Any]:
    """The recipe's config with a tiny model, 0.2 s segments from ``data_root``, batches of 2 and
    ``train`` overriding the rest of its train section."""
    return superres.load_config(overrides={
        "data": {"root": str(data_root), "segment_seconds": 0.2},
        "model": dict(TINY_MODEL),
        "train": {"batch_size": 2, "val_examples": 2, "num_workers": 0, **train},
    })
