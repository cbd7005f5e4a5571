"""The mixing desk: each stem gets a stereo image, EQ, its own reverb and a level.

Everything here is linear per stem (filters, delays, convolution, gains), and the mixture is
defined afterwards as the sum of the finished stems, so the ground truth stays exact.
"""
from __future__ import annotations

import numpy as np

from labkit.data.synth import dsp
from labkit.data.synth.layers import Layer

STEMS = ("vocals", "drums", "bass", "other")

# Per stem: high-pass range (Hz), reverb time range (s), wet level range (dB re dry RMS), and the
# chance of any reverb at all.
_CHAIN = {
    "vocals": ((70, 160), (0.8, 2.6), (-14.0, -5.0), 1.0),
    "drums": ((20, 45), (0.3, 1.3), (-20.0, -9.0), 0.85),
    "bass": ((25, 45), (0.3, 0.8), (-28.0, -18.0), 0.3),
    "other": ((40, 140), (0.6, 2.6), (-16.0, -5.0), 0.95),
}


def _image(layers: list[Layer], channels: int, n: int, sr: int,
           rng: np.random.Generator) -> np.ndarray:
    """Pan and spread mono layers ``(n,)`` into ``(channels, n)``."""
    out = np.zeros((channels, n), dtype=np.float32)
    for layer in layers:
        x = layer.signal.astype(np.float32)
        if channels == 1:
            out[0] += x
            continue
        left, right = dsp.pan_gains(layer.pan)
        if layer.width > 0:
            # A short delay on one side (Haas effect) widens the layer.
            d = int(rng.uniform(0.006, 0.018) * sr)
            delayed = np.zeros_like(x)
            delayed[d:] = x[:-d]
            w = np.float32(0.5 * layer.width)
            out[0] += left * ((1 - w) * x + w * delayed)
            out[1] += right * ((1 - w) * delayed + w * x)
        else:
            out[0] += left * x
            out[1] += right * x
    return out


def _eq(stem: str, rng: np.random.Generator, sr: int) -> tuple[np.ndarray, dict]:
    """A random but gentle EQ: high-pass, a low shelf, a bell and a high shelf."""
    hp_range = _CHAIN[stem][0]
    hp = float(rng.uniform(*hp_range))
    low = (float(rng.uniform(100, 300)), float(rng.uniform(-4, 4)))
    bell = (float(np.exp(rng.uniform(np.log(200), np.log(5000)))), float(rng.uniform(-5, 5)),
            float(rng.uniform(0.5, 2.0)))
    high = (float(rng.uniform(3000, 9000)), float(rng.uniform(-6, 3)))
    sos = np.vstack([dsp.butter("highpass", hp, sr), dsp.shelf("low", low[0], low[1], sr),
                     dsp.peaking(bell[0], bell[1], bell[2], sr),
                     dsp.shelf("high", high[0], high[1], sr)])
    meta = {"highpass_hz": round(hp, 1), "low_shelf": [round(v, 2) for v in low],
            "bell": [round(v, 2) for v in bell], "high_shelf": [round(v, 2) for v in high]}
    return sos, meta


def _echo(x: np.ndarray, beat: float, sr: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, dict]:
    """A tempo-synced echo (ping-pong in stereo) of ``x`` ``(channels, n)``, darker each repeat."""
    delay = float(rng.choice([0.5, 0.75, 1.0])) * beat
    feedback = float(rng.uniform(0.2, 0.45))
    level = float(rng.uniform(0.15, 0.4))
    d = int(delay * sr)
    out = np.zeros_like(x)
    tap = dsp.filt(dsp.butter("lowpass", 4000, sr), x.mean(axis=0))
    for k in range(1, 5):
        tap = dsp.filt(dsp.butter("lowpass", 5000, sr), tap) if k > 1 else tap
        if k * d >= x.shape[-1]:
            break
        gain = np.float32(level * feedback ** (k - 1))
        channel = (k - 1) % x.shape[0]
        out[channel, k * d:] += gain * tap[: x.shape[-1] - k * d]
    return out, {"delay_beats": round(delay / beat, 3), "feedback": round(feedback, 3),
                 "level": round(level, 3)}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _frame_power(x: np.ndarray, frame: int) -> np.ndarray:
    """Mean power per frame of ``x`` ``(channels, n)``."""
    n = x.shape[-1] // frame * frame
    if n == 0:
        return np.array([np.mean(np.square(x, dtype=np.float64))])
    return np.square(x[:, :n], dtype=np.float64).reshape(x.shape[0], -1, frame).mean(axis=(0, 2))


def process_stem(stem: str, layers: list[Layer], channels: int, n: int, sr: int, beat: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A finished stem ``(channels, n)``: image, EQ, echo (vocals), reverb; RMS 1 (unless silent)."""
    x = _image(layers, channels, n, sr, rng)
    sos, eq_meta = _eq(stem, rng, sr)
    x = dsp.filt(sos, x)
    meta: dict = {"eq": eq_meta, "pans": {la.name: round(la.pan, 3) for la in layers}}
    if stem == "vocals" and rng.random() < 0.35:
        wet, meta["echo"] = _echo(x, beat, sr, rng)
        x = x + wet
    _, rt_range, wet_range, chance = _CHAIN[stem]
    if rng.random() < chance and _rms(x) > 0:
        room = dsp.make_room(rng, sr, channels, float(rng.uniform(*rt_range)),
                             float(rng.uniform(0.0, 0.04)), float(rng.uniform(2500, 7000)))
        wet_db = float(rng.uniform(*wet_range))
        wet = dsp.convolve(x.mean(axis=0), room.ir)
        wet *= np.float32(dsp.db_to_gain(wet_db) * _rms(x) / (_rms(wet) + 1e-12))
        x = x + wet
        meta["reverb"] = {**room.meta(), "wet_db": round(wet_db, 2)}
    rms = _rms(x)
    if rms > 0:
        x = x / np.float32(rms)
    return x.astype(np.float32), meta


def balance(stems: dict[str, np.ndarray], rng: np.random.Generator, sr: int
            ) -> tuple[dict[str, np.ndarray], dict]:
    """Set the stems' levels: accompaniment stems relative to the drums, then the voice.

    The voice is set relative to the accompaniment *while it sings* (frames where it is within
    30 dB of its loudest 100 ms), as an engineer rides the vocal fader.
    """
    gains = {"drums": 0.0, "bass": float(rng.uniform(-4.0, 3.0)),
             "other": float(rng.uniform(-4.0, 3.0))}
    out = {s: stems[s] * np.float32(dsp.db_to_gain(gains[s])) for s in ("drums", "bass", "other")}
    accompaniment = out["drums"] + out["bass"] + out["other"]
    frame = int(0.1 * sr)
    vocal_power = _frame_power(stems["vocals"], frame)
    ratio_db = float(rng.uniform(-8.0, -1.0))
    if vocal_power.max() > 0:
        active = vocal_power > vocal_power.max() * 1e-3
        acc_power = _frame_power(accompaniment, frame)[: active.size]
        # An a cappella stretch has (almost) no accompaniment: fall back to its overall level.
        acc_level = max(acc_power[active].mean(), 0.01 * acc_power.mean(), 1e-20)
        current = 10 * np.log10(vocal_power[active].mean() / acc_level)
        gains["vocals"] = ratio_db - current
    else:
        gains["vocals"] = 0.0
    out["vocals"] = stems["vocals"] * np.float32(dsp.db_to_gain(gains["vocals"]))
    meta = {"gains_db": {s: round(g, 3) for s, g in gains.items()},
            "vocals_to_accompaniment_db": round(ratio_db, 3)}
    return {s: out[s] for s in STEMS}, meta
