"""labkit: the library behind the course notebooks.

The switches every notebook starts with live here: :func:`fast_mode`, :func:`device`,
:func:`seed_everything`; :func:`check` gives feedback on an exercise inside a notebook.
"""
from __future__ import annotations

from labkit.core import device, fast_mode, run_manifest, scale, seed_everything
from labkit.errors import AudioError, CheckpointError, DataError, LabkitError

__version__ = "0.1.0"

__all__ = [
    "AudioError", "CheckpointError", "DataError", "LabkitError", "__version__", "check",
    "device", "fast_mode", "run_manifest", "scale", "seed_everything",
]


def check(exercise_id: str, *objects, **named):
    """Check a student's answer to exercise ``exercise_id`` (e.g. ``"01.2"``) and print feedback.

    Returns True when every check passes. See :mod:`labkit.grading`.
    """
    from labkit.grading import check as _check

    return _check(exercise_id, *objects, **named)
