"""Process-wide switches: fast mode, the compute device, seeding, and the run manifest."""
from __future__ import annotations

import hashlib
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def fast_mode() -> bool:
    """True when heavy loops should shrink to a smoke test.

    On when ``LABKIT_FAST=1``; also on when ``CI`` is set and ``LABKIT_FAST`` is not ``0``.
    """
    value = os.environ.get("LABKIT_FAST")
    if value is not None:
        value = value.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"LABKIT_FAST={value!r}: use 1 (fast) or 0 (full)")
    return bool(os.environ.get("CI"))


def scale(full: int, fast: int) -> int:
    """Pick ``fast`` in fast mode and ``full`` otherwise (for step counts, sizes, epochs)."""
    return fast if fast_mode() else full


def device(prefer: str | None = None):
    """The torch device to use: CUDA when available, else the CPU.

    ``prefer="cpu"`` (or ``LABKIT_DEVICE=cpu``) forces the CPU.
    """
    import torch

    prefer = prefer or os.environ.get("LABKIT_DEVICE")
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated. Returns the seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here, capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def fingerprint(paths: list[str | Path] | None) -> str | None:
    """A short hash of file names, sizes and modification times: enough to tell two data sets apart."""
    if not paths:
        return None
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def run_manifest(seed: int | None = None, data_fingerprint: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    """What is needed to reproduce a run: seed, versions, git commit, device, fast mode, data."""
    import torch

    from labkit import __version__

    manifest = {
        "seed": seed,
        "labkit": __version__,
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device()),
        "fast_mode": fast_mode(),
        "data_fingerprint": data_fingerprint,
    }
    manifest.update(extra)
    return manifest


def repo_root() -> Path | None:
    """The labkit checkout this module lives in (the folder holding pyproject.toml), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "labkit").is_dir():
            return parent
    return None
