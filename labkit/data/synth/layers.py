"""What an engine hands to the mixer: mono layers with a place in the stereo field."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Layer:
    """One mono part of a stem: ``signal`` ``(samples,)`` float32, panned to ``pan`` in [-1, 1].

    ``width`` in [0, 1] spreads the layer by a short inter-channel delay (0: a point source).
    """

    name: str
    signal: np.ndarray
    pan: float = 0.0
    width: float = 0.0


@dataclass
class Part:
    """An engine's output for one stem: its layers and a JSON-ready description."""

    layers: list[Layer]
    meta: dict
