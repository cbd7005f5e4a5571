"""Data: the built-in toy-MUSDB set, real MUSDB18, and torch data sets over their tracks.

>>> from labkit.data import find_tracks, SegmentDataset, FixedSegments
>>> train = SegmentDataset(find_tracks(split="train"), segment_seconds=4.0)   # built-in set
>>> valid = FixedSegments(find_tracks("musdb", split="valid"))               # MUSDB_PATH

- :mod:`labkit.data.toy`: the synthetic, MUSDB18-shaped data set (``ensure``, ``generate``,
  ``render_track``, ``default_root``).
- :mod:`labkit.data.tracks`: :class:`Track` and :func:`find_tracks` (WAV folders, ``.stem.mp4``).
- :mod:`labkit.data.datasets`: :class:`SegmentDataset`, :class:`FixedSegments`,
  :class:`FullTracks`.

Names are imported on first use, so ``import labkit.data`` stays cheap (no torch, no musdb).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "STEMS": "tracks", "Track": "tracks", "find_tracks": "tracks", "resolve_root": "tracks",
    "musdb_validation_tracks": "tracks", "target_stems": "tracks",
    "SegmentDataset": "datasets", "FixedSegments": "datasets", "FullTracks": "datasets",
    "read_segment": "datasets",
    "default_root": "toy", "render_track": "toy", "generate": "toy", "ensure": "toy",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"labkit.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
