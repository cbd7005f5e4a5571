"""What the atom codec is compared with, measured the same way: real files, real bytes.

- :func:`lossy_roundtrip` writes MP3 or Opus with soundfile (libsndfile's LAME and libopus),
  reads the file back, aligns it to the original (:func:`align`) and returns it with the file's
  size in bytes. :func:`match_bitrate` searches the encoder setting whose measured bit rate is
  closest to a target.
- :func:`topk_encode` / :func:`topk_decode` keep the K largest coefficients of an MDCT (critically
  sampled) or an STFT (4x redundant) and store them in a file with the same ingredients as the
  atom codec (quantized values, delta-coded positions, LZMA2): the simplest "sparse transform"
  codec at a given byte count (:func:`topk_at_bytes`).
- :func:`with_original_phase` is the measurement *not* to make: it replaces a reconstruction's
  STFT phase by the original's, which is information no decoder has.

Alignment: low-rate constant-bit-rate MP3 reads back with the encoder delay in front (1105
samples at 16 kHz) and padding after; :func:`align` finds the delay as the lag that maximises the
cross-correlation with the original (searched within ``max_lag`` samples, both directions),
shifts by it and crops or zero-pads to the original length.
"""
from __future__ import annotations

import lzma
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit.errors import LabkitError

__all__ = [
    "align", "imdct", "lossy_roundtrip", "match_bitrate", "mdct", "topk_at_bytes", "topk_decode",
    "topk_encode", "with_original_phase",
]

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_TOPK_MAGIC = b"LKTK"
_TOPK_HEADER = struct.Struct("<4sBBIIIIIBff")  # magic, kind, bits, sr, length, size, k, n_coefs,
#                                                  gap bytes, log-magnitude low, high
_KINDS = {"mdct": 0, "stft": 1}


def _mono(audio: Any) -> np.ndarray:
    x = np.asarray(audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else audio,
                   dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise LabkitError(f"audio has shape {x.shape}; expected mono (1, samples) or (samples,)")
    return x


# --------------------------------------------------------------------------- MP3 / Opus
def align(reference: Any, estimate: Any, max_lag: int = 4096) -> tuple[np.ndarray, int]:
    """Shift ``estimate`` to line up with ``reference`` (both mono); returns ``(aligned, lag)``.

    ``lag`` > 0 means the estimate was late by that many samples. The result has the
    reference's length, shape ``(1, samples)``, float32.
    """
    ref, est = _mono(reference), _mono(estimate)
    size = 1 << math.ceil(math.log2(ref.shape[0] + est.shape[0]))
    corr = np.fft.irfft(np.fft.rfft(est, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(corr[lags])])
    shifted = est[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), est])
    out = np.zeros(ref.shape[0])
    n = min(ref.shape[0], shifted.shape[0])
    out[:n] = shifted[:n]
    return out[None].astype(np.float32), lag


def lossy_roundtrip(audio: Any, sr: int, fmt: str, compression_level: float,
                    bitrate_mode: str | None = None) -> tuple[np.ndarray, int, int]:
    """Encode ``audio`` (mono) as ``fmt`` (``"mp3"`` or ``"opus"``), decode it and align it.

    ``compression_level`` (0 best .. 1 smallest) and ``bitrate_mode`` go to
    :func:`labkit.audio.save`. Returns ``(decoded (1, samples), n_bytes, lag)``, ``n_bytes`` being
    the size of the file written.
    """
    from labkit import audio as audio_io

    if fmt not in ("mp3", "opus"):
        raise LabkitError(f"fmt={fmt!r}: use 'mp3' or 'opus'")
    x = _mono(audio).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip.{fmt}"
        audio_io.save(path, x[None], sr, compression_level=compression_level,
                      bitrate_mode=bitrate_mode)
        n_bytes = os.path.getsize(path)
        decoded, _ = audio_io.load(path)
    aligned, lag = align(x, decoded[0])
    return aligned, n_bytes, lag


def match_bitrate(audio: Any, sr: int, fmt: str, target_kbps: float,
                  levels: Any = None) -> dict[str, Any]:
    """The ``fmt`` encoding whose measured bit rate is closest to ``target_kbps``.

    Tries ``compression_level`` over ``levels`` (default 0 to 0.99 in steps of 0.01; MP3 in
    constant bit rate mode, where the level picks one of the standard MPEG rates, e.g. 16
    kbit/s, whose files measure slightly more because of frame padding and the encoder delay).
    Returns ``{"format", "compression_level", "bitrate_mode", "bytes", "kbps", "decoded",
    "lag"}`` with ``kbps`` measured from the file's size over the input's duration.
    """
    x = _mono(audio)
    duration = x.shape[0] / sr
    levels = np.round(np.arange(0.0, 1.0, 0.01), 2) if levels is None else levels
    mode = "CONSTANT" if fmt == "mp3" else None
    best: dict[str, Any] | None = None
    seen: set[int] = set()
    for level in levels:
        try:
            decoded, n_bytes, lag = lossy_roundtrip(x, sr, fmt, float(level), mode)
        except LabkitError:
            continue
        if n_bytes in seen:
            continue
        seen.add(n_bytes)
        entry = {"format": fmt, "compression_level": float(level), "bitrate_mode": mode,
                 "bytes": n_bytes, "kbps": n_bytes * 8 / duration / 1000, "decoded": decoded,
                 "lag": lag}
        if best is None or (abs(entry["kbps"] - target_kbps), entry["bytes"]) < (
                abs(best["kbps"] - target_kbps), best["bytes"]):
            best = entry
    if best is None:
        raise LabkitError(f"no {fmt} setting could be written at {sr} Hz")
    return best


# --------------------------------------------------------------------------- transforms
def _mdct_basis(size: int) -> np.ndarray:
    n = np.arange(2 * size)
    k = np.arange(size)
    window = np.sin(np.pi * (n + 0.5) / (2 * size))  # Princen-Bradley: w^2 + shifted w^2 = 1
    basis = np.cos(np.pi / size * (n[None] + 0.5 + size / 2) * (k[:, None] + 0.5))
    return math.sqrt(2 / size) * basis * window[None]


def mdct(signal: Any, size: int = 256) -> np.ndarray:
    """MDCT of a mono signal with a sine window: ``(size, frames)`` real coefficients.

    Frames of ``2 * size`` samples every ``size`` samples, the signal padded with ``size`` zeros
    in front and enough behind; :func:`imdct` inverts it exactly (time-domain alias
    cancellation). Critically sampled: about as many coefficients as samples.
    """
    x = _mono(signal)
    frames = math.ceil(x.shape[0] / size) + 1
    padded = np.zeros((frames + 1) * size)
    padded[size:size + x.shape[0]] = x
    blocks = np.lib.stride_tricks.sliding_window_view(padded, 2 * size)[::size][:frames]
    return _mdct_basis(size) @ blocks.T


def imdct(coefficients: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`mdct`: ``(size, frames)`` -> signal ``(length,)``."""
    size, frames = coefficients.shape
    blocks = _mdct_basis(size).T @ coefficients  # (2 size, frames), windowed
    out = np.zeros((frames + 1) * size)
    for t in range(frames):
        out[t * size:t * size + 2 * size] += blocks[:, t]
    return out[size:size + length]


# --------------------------------------------------------------------------- top-K codec
def topk_encode(audio: Any, sr: int, k: int, kind: str = "mdct", size: int = 256,
                bits: int = 6) -> bytes:
    """Keep the ``k`` largest coefficients of an MDCT (``size`` bins) or STFT (``n_fft = size``,
    hop ``size // 4``) and store them in bytes.

    Stored: a header (magic ``b"LKTK"``, kind, bits, rate, length, size, k, coefficient count,
    bytes per position gap, log-magnitude range), then LZMA2 of: position gaps of the sorted flat
    indices (byte planes), log-magnitudes quantized to ``bits`` bits, and signs (MDCT, one byte
    plane of 0/1) or phases (STFT, ``bits`` bits).
    """
    from labkit.atoms.codec import quantize_values

    if kind not in _KINDS:
        raise LabkitError(f"kind={kind!r}: use 'mdct' or 'stft'")
    x = _mono(audio)
    if kind == "mdct":
        coefs = mdct(x, size)
    else:
        from labkit.spectral import stft

        coefs = stft(torch.from_numpy(x), size, size // 4).numpy()
    flat = coefs.reshape(-1)
    k = int(min(max(k, 1), flat.shape[0]))
    index = np.sort(np.argpartition(np.abs(flat), -k)[-k:])
    values = flat[index]
    magnitude = np.log(np.maximum(np.abs(values), 1e-12))
    low, high = float(np.float32(magnitude.min())), float(np.float32(magnitude.max()))
    high = max(high, low + 1e-6)
    q_mag = quantize_values(magnitude, low, high, bits)
    gaps = np.diff(index, prepend=-1) - 1  # >= 0
    gap_bytes = max(1, math.ceil(int(gaps.max()).bit_length() / 8))
    planes = [((gaps >> (8 * b)) & 0xFF).astype(np.uint8).tobytes()
              for b in reversed(range(gap_bytes))]
    parts = planes + [_bytes_of(q_mag, bits)]
    if kind == "mdct":
        parts.append((values < 0).astype(np.uint8).tobytes())
    else:
        q_phase = np.rint((np.angle(values) + np.pi) / (2 * np.pi) * (1 << bits)).astype(
            np.int64) % (1 << bits)
        parts.append(_bytes_of(q_phase, bits))
    payload = lzma.compress(b"".join(parts), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    header = _TOPK_HEADER.pack(_TOPK_MAGIC, _KINDS[kind], bits, sr, x.shape[0], size, k,
                               flat.shape[0], gap_bytes, low, high)
    return header + payload


def _bytes_of(levels: np.ndarray, bits: int) -> bytes:
    if bits <= 8:
        return levels.astype(np.uint8).tobytes()
    v = levels.astype(np.uint16)
    return (v >> 8).astype(np.uint8).tobytes() + (v & 0xFF).astype(np.uint8).tobytes()


def topk_decode(data: bytes) -> tuple[np.ndarray, int]:
    """Bytes of :func:`topk_encode` -> ``(audio (1, samples) float32, sample_rate)``."""
    from labkit.atoms.codec import dequantize_values

    if data[:4] != _TOPK_MAGIC:
        raise LabkitError(f"not a top-K file: starts with {data[:4]!r}, expected {_TOPK_MAGIC!r}")
    (_, kind, bits, sr, length, size, k, n_coefs, gap_bytes, low,
     high) = _TOPK_HEADER.unpack_from(data)
    raw = np.frombuffer(lzma.decompress(data[_TOPK_HEADER.size:], format=lzma.FORMAT_RAW,
                                        filters=_LZMA_FILTERS), dtype=np.uint8).astype(np.int64)
    gaps = np.zeros(k, dtype=np.int64)
    for b in range(gap_bytes):
        gaps = (gaps << 8) | raw[b * k:(b + 1) * k]
    pos = gap_bytes * k
    width = 1 if bits <= 8 else 2
    q_mag = raw[pos:pos + k] if width == 1 else (raw[pos:pos + k] << 8) | raw[pos + k:pos + 2 * k]
    pos += width * k
    index = np.cumsum(gaps + 1) - 1
    magnitude = np.exp(dequantize_values(q_mag, low, high, bits))
    if kind == _KINDS["mdct"]:
        signs = np.where(raw[pos:pos + k] > 0, -1.0, 1.0)
        flat = np.zeros(n_coefs)
        flat[index] = magnitude * signs
        frames = n_coefs // size
        y = imdct(flat.reshape(size, frames), length)
    else:
        from labkit.spectral import istft

        q_phase = raw[pos:pos + k] if width == 1 else (raw[pos:pos + k] << 8) | raw[
            pos + k:pos + 2 * k]
        phase = q_phase * (2 * np.pi / (1 << bits)) - np.pi
        flat = np.zeros(n_coefs, dtype=np.complex128)
        flat[index] = magnitude * np.exp(1j * phase)
        bins = size // 2 + 1
        spec = torch.from_numpy(flat.reshape(bins, n_coefs // bins))
        y = istft(spec, size, size // 4, length=length).numpy()
    return y[None].astype(np.float32), sr


def topk_at_bytes(audio: Any, sr: int, max_bytes: int, kind: str = "mdct", size: int = 256,
                  bits: int = 6) -> tuple[bytes, int]:
    """The largest K whose :func:`topk_encode` file fits in ``max_bytes``; returns
    ``(data, k)`` (bisection on K; sizes are measured, not estimated)."""
    x = _mono(audio)
    low, high = 1, x.shape[0] * (1 if kind == "mdct" else 4)
    best = topk_encode(x, sr, 1, kind, size, bits)
    best_k = 1
    while low <= high:
        mid = (low + high) // 2
        data = topk_encode(x, sr, mid, kind, size, bits)
        if len(data) <= max_bytes:
            best, best_k, low = data, mid, mid + 1
        else:
            high = mid - 1
    return best, best_k


# --------------------------------------------------------------------------- the cheat
def with_original_phase(estimate: Any, reference: Any, n_fft: int = 512,
                        hop_length: int = 128) -> np.ndarray:
    """``estimate``'s STFT magnitude with ``reference``'s STFT phase, back to a waveform.

    This is how published "audio Gaussian splatting" numbers were scored: the decoder is handed
    the original's phase, which a real decoder never has. Returns ``(1, samples)`` float32.
    """
    from labkit.spectral import istft, stft

    est, ref = _mono(estimate), _mono(reference)
    if est.shape != ref.shape:
        raise LabkitError(f"estimate has {est.shape[0]} samples, reference {ref.shape[0]}")
    mag = stft(torch.from_numpy(est), n_fft, hop_length).abs()
    phase = stft(torch.from_numpy(ref), n_fft, hop_length).angle()
    y = istft(torch.polar(mag, phase), n_fft, hop_length, length=ref.shape[0])
    return y.numpy()[None].astype(np.float32)
