"""An honest codec for Gabor atoms: quantize, pack into bytes, decode from those bytes alone.

Every number this module reports comes from the stored bytes: :func:`decode` reads only the
``bytes`` it is given (no original signal, no original phase, no side information), and sizes are
``len(data)``, header included.

Quantization
    Each parameter ``p`` gets ``bits[p]`` bits and a range ``[low, high]`` stored in the header;
    a value ``v`` becomes the integer ``q = round((v - low) / (high - low) * (2**bits - 1))``
    and decodes to ``low + q * (high - low) / (2**bits - 1)`` (:func:`quantize_values`,
    :func:`dequantize_values`). Per parameter:

    - ``centre`` -- atoms are sorted by centre and the *gaps* between consecutive centres are
      quantized over ``[0, largest gap]`` in a closed loop (each gap is measured from the decoded
      previous centre, so errors do not add up). Uniform bits over the whole clip would put a
      5 s clip on a 20 ms grid at 8 bits; gaps are small and cheap to entropy-code.
      When a centre moves by ``d`` the carrier is kept in place: ``phase += 2 pi f d + pi r d^2``
      and ``frequency += r d`` (the phase is measured at the centre, see
      :mod:`labkit.models.atoms`), so only the envelope moves.
    - ``width`` and ``amplitude`` -- quantized as natural logarithms (relative precision: a
      width of 1 ms and one of 30 ms get the same relative error).
    - ``frequency`` and ``chirp`` -- linear (Hz and Hz/s).
    - ``phase`` -- the fixed range ``[-pi, pi)`` with ``2**bits`` levels that wrap around.

File format, version 1 (all integers little-endian)::

    offset size  field
    0      4     magic b"LKAT"
    4      1     version (1)
    5      1     entropy coder of the payload: 0 none, 1 zlib, 2 lzma (raw LZMA2), 3 bz2
    6      1     flags: bit 0 set = the atoms have a chirp parameter
    7      4     sample rate (Hz), uint32
    11     4     length (samples), uint32
    15     4     number of atoms N, uint32
    19     9*P   for each of the P parameters, in the order centre, width, frequency, amplitude,
                 phase[, chirp]: bits (uint8, 1..16), low (float32), high (float32)
    ...          payload: the entropy-coded concatenation, parameter by parameter in the same
                 order, of the N quantized values of each parameter stored as byte planes
                 (bits <= 8: one byte per value; 9..16 bits: a byte of each value's top 8 bits
                 for all values, then a byte of its remaining bits - 8 low bits for all values)

Atoms appear in order of centre time; zero-amplitude atoms are not stored. :func:`encode` tries
every coder and keeps the smallest payload (the coder id says which one :func:`decode` must use):
on the course's speech clip LZMA2 wins clearly (2800 atoms with the default bits: 16 864 bytes
uncoded, zlib 11 213, bz2 11 124, LZMA2 9 441, i.e. 27.0 bits per atom).
"""
from __future__ import annotations

import bz2
import lzma
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from labkit.errors import LabkitError
from labkit.models.atoms import PARAMETER_NAMES, render_atoms

__all__ = [
    "CODERS", "FORMAT_VERSION", "MAGIC", "STORED_ORDER", "CodecError", "QuantizedAtoms",
    "bitrate_kbps", "codec_stats", "compression_ratio", "decode", "decode_audio", "dequantize",
    "dequantize_values", "encode", "fake_quantize", "mel_distance", "pack", "parse_bits",
    "quantize", "quantize_values", "read_header", "unpack",
]

MAGIC = b"LKAT"
FORMAT_VERSION = 1
#: Parameters in the order the file stores them (``chirp`` only when the flag says so).
STORED_ORDER: tuple[str, ...] = ("centre", "width", "frequency", "amplitude", "phase", "chirp")
#: Entropy coders by id: (name, compress, decompress).
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
CODERS: dict[int, tuple[str, Any, Any]] = {
    0: ("none", lambda b: b, lambda b: b),
    1: ("zlib", lambda b: zlib.compress(b, 9), zlib.decompress),
    2: ("lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
        lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)),
    3: ("bz2", lambda b: bz2.compress(b, 9), bz2.decompress),
}
_HEADER = struct.Struct("<4sBBBIII")
_RANGE = struct.Struct("<Bff")
_LOG_PARAMS = ("width", "amplitude")
_TWO_PI = 2.0 * math.pi


class CodecError(LabkitError):
    """Bytes that are not a valid atom file, or settings the format cannot store."""


# --------------------------------------------------------------------------- scalar quantizer
def quantize_values(values: Any, low: float, high: float, bits: int) -> np.ndarray:
    """Uniform quantizer: ``values`` -> integers in ``[0, 2**bits - 1]`` (same shape, int64).

    Level ``q`` stands for ``low + q * (high - low) / (2**bits - 1)``; values outside
    ``[low, high]`` are clipped to the nearest end. ``high == low`` maps everything to 0.
    """
    _check_bits(bits)
    levels = (1 << bits) - 1
    v = np.asarray(values, dtype=np.float64)
    if high == low:
        return np.zeros(v.shape, dtype=np.int64)
    scaled = (v - low) / (high - low) * levels
    return np.clip(np.rint(scaled), 0, levels).astype(np.int64)


def dequantize_values(q: Any, low: float, high: float, bits: int) -> np.ndarray:
    """Inverse of :func:`quantize_values`: integers -> float64 values on the grid."""
    _check_bits(bits)
    levels = (1 << bits) - 1
    return low + np.asarray(q, dtype=np.float64) * ((high - low) / levels)


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise CodecError(f"bits={bits!r}: expected a whole number of bits from 1 to 16")


def parse_bits(bits: int | Mapping[str, int], chirp: bool = False) -> dict[str, int]:
    """Bits per stored parameter from one number (the same for all) or a dict by name.

    A dict may leave parameters out; they get 8 bits. Returns ``{name: bits}`` in file order.
    """
    names = STORED_ORDER if chirp else STORED_ORDER[:-1]
    if isinstance(bits, Mapping):
        unknown = set(bits) - set(STORED_ORDER)
        if unknown:
            raise CodecError(f"bits: unknown parameter(s) {sorted(unknown)}; use "
                             f"{', '.join(STORED_ORDER)}")
        out = {name: int(bits.get(name, 8)) for name in names}
    else:
        out = dict.fromkeys(names, bits)
    for value in out.values():
        _check_bits(value)
    return out


# --------------------------------------------------------------------------- atoms
@dataclass
class QuantizedAtoms:
    """What the file stores: integer levels per parameter, their bits and ranges, and the clip.

    ``levels[name]`` is an int64 array ``(n_atoms,)``; for ``centre`` it holds the gaps between
    consecutive (sorted) centres. ``ranges[name] = (low, high)`` in the quantizer's domain
    (natural log for width and amplitude).
    """

    sample_rate: int
    length: int
    bits: dict[str, int]
    ranges: dict[str, tuple[float, float]]
    levels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        """How many atoms are stored."""
        return int(next(iter(self.levels.values())).shape[0]) if self.levels else 0

    @property
    def has_chirp(self) -> bool:
        """Whether a chirp rate is stored."""
        return "chirp" in self.bits


def _as_numpy(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name in PARAMETER_NAMES:
        if name not in params:
            if name == "chirp":
                continue
            raise CodecError(f"atom parameters lack {name!r}; expected {', '.join(PARAMETER_NAMES)}")
        value = params[name]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
        out[name] = np.asarray(value, dtype=np.float64).reshape(-1)
    n = out["amplitude"].shape[0]
    bad = [k for k, v in out.items() if v.shape[0] != n]
    if bad:
        raise CodecError(f"atom parameters {bad} do not have {n} values like amplitude")
    return out


def _float32(value: float) -> float:
    """``value`` rounded to float32, what the header can store."""
    return float(np.float32(value))


def _gap_levels(centre: np.ndarray, step: float, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed-loop gap coding of sorted centres: (levels, decoded centres)."""
    top = (1 << bits) - 1
    levels = np.empty(centre.shape[0], dtype=np.int64)
    decoded = np.empty_like(centre)
    previous = 0.0
    for i, c in enumerate(centre.tolist()):
        q = min(max(round((c - previous) / step), 0), top) if step > 0 else 0
        levels[i] = q
        previous = previous + q * step
        decoded[i] = previous
    return levels, decoded


def quantize(params: Mapping[str, Any], sample_rate: int, length: int,
             bits: int | Mapping[str, int] = 8,
             ranges: Mapping[str, tuple[float, float]] | None = None) -> QuantizedAtoms:
    """Quantize atom parameters (natural units, see :mod:`labkit.models.atoms`) for storage.

    ``bits`` is one number for every parameter or a dict by name (:func:`parse_bits`).
    ``ranges`` fixes the quantizer range of some parameters (in the quantizer's domain, as
    :attr:`QuantizedAtoms.ranges`); the others span the values present. A chirp is stored when
    any chirp rate is nonzero. Atoms with zero amplitude are dropped; the rest are sorted by
    centre. Centres move carrier-preserving (module docstring).
    """
    p = _as_numpy(params)
    keep = p["amplitude"] > 0
    p = {k: v[keep] for k, v in p.items()}
    order = np.argsort(p["centre"], kind="stable")
    p = {k: v[order] for k, v in p.items()}
    chirp = "chirp" in p and bool(np.any(p["chirp"] != 0))
    bit_map = parse_bits(bits, chirp)
    fixed = dict(ranges or {})
    out = QuantizedAtoms(int(sample_rate), int(length), bit_map, {}, {})
    if p["amplitude"].shape[0] == 0:
        for name in bit_map:
            out.ranges[name] = (0.0, 0.0)
            out.levels[name] = np.zeros(0, dtype=np.int64)
        return out

    # centre: closed-loop gaps, then keep each carrier in place
    b = bit_map["centre"]
    if "centre" in fixed:
        low, high = fixed["centre"]
    else:
        gaps = np.diff(p["centre"], prepend=0.0)
        low, high = 0.0, _float32(float(gaps.max()))
    step = (high - low) / ((1 << b) - 1)
    levels, decoded = _gap_levels(p["centre"], step, b)
    out.ranges["centre"], out.levels["centre"] = (low, high), levels
    shift = decoded - p["centre"]
    r = p["chirp"] if chirp else np.zeros_like(shift)
    p["phase"] = p["phase"] + _TWO_PI * p["frequency"] * shift + math.pi * r * shift**2
    p["frequency"] = p["frequency"] + r * shift

    for name in bit_map:
        if name == "centre":
            continue
        v = p[name]
        b = bit_map[name]
        if name == "phase":
            wrapped = np.remainder(v + math.pi, _TWO_PI)
            q = np.rint(wrapped / _TWO_PI * (1 << b)).astype(np.int64) % (1 << b)
            out.ranges[name], out.levels[name] = (-math.pi, math.pi), q
            continue
        if name in _LOG_PARAMS:
            v = np.log(np.maximum(v, 1e-12))
        if name in fixed:
            low, high = fixed[name]
        else:
            low, high = _float32(float(v.min())), _float32(float(v.max()))
            if high < v.max():  # float32 rounded the top down: widen by one float32 step
                high = float(np.nextafter(np.float32(high), np.float32(np.inf)))
            if low > v.min():
                low = float(np.nextafter(np.float32(low), np.float32(-np.inf)))
        out.ranges[name] = (low, high)
        out.levels[name] = quantize_values(v, low, high, b)
    return out


def dequantize(q: QuantizedAtoms) -> dict[str, torch.Tensor]:
    """Atom parameters (natural units, float32 tensors ``(n_atoms,)``) from quantized levels."""
    values: dict[str, np.ndarray] = {}
    for name, b in q.bits.items():
        low, high = q.ranges[name]
        levels = q.levels[name]
        if name == "centre":
            step = (high - low) / ((1 << b) - 1)
            values[name] = np.cumsum(levels.astype(np.float64)) * step
        elif name == "phase":
            values[name] = levels.astype(np.float64) * (_TWO_PI / (1 << b)) - math.pi
        else:
            v = dequantize_values(levels, low, high, b)
            values[name] = np.exp(v) if name in _LOG_PARAMS else v
    if "chirp" not in values:
        values["chirp"] = np.zeros_like(values["amplitude"])
    return {name: torch.from_numpy(values[name].astype(np.float32)) for name in PARAMETER_NAMES}


def fake_quantize(values: torch.Tensor, name: str, bits: int, low: float = 0.0,
                  high: float = 0.0) -> torch.Tensor:
    """Round ``values`` (natural units) to parameter ``name``'s grid, passing gradients straight
    through (the straight-through estimator of quantization-aware training).

    The forward value is what :func:`quantize` then :func:`dequantize` give for ``amplitude``,
    ``width``, ``frequency``, ``chirp`` with range ``(low, high)`` in the quantizer's domain, and
    for ``phase`` (fixed range); the gradient is that of the identity. Not for ``centre``, whose
    grid depends on the other atoms.
    """
    _check_bits(bits)
    if name == "phase":
        step = _TWO_PI / (1 << bits)
        rounded = torch.round((values + math.pi) / step)
        grid = torch.remainder(rounded, 1 << bits) * step - math.pi
    elif name in _LOG_PARAMS or name in ("frequency", "chirp"):
        levels = (1 << bits) - 1
        domain = torch.log(values.clamp_min(1e-12)) if name in _LOG_PARAMS else values
        if high == low:
            grid = torch.full_like(values, low)
        else:
            q = torch.clamp(torch.round((domain - low) / (high - low) * levels), 0, levels)
            grid = low + q * ((high - low) / levels)
        grid = torch.exp(grid) if name in _LOG_PARAMS else grid
    else:
        raise CodecError(f"fake_quantize: {name!r} has no per-atom grid; use amplitude, width, "
                         "frequency, chirp or phase")
    return values + (grid - values).detach()


# --------------------------------------------------------------------------- bytes
def _planes(levels: np.ndarray, bits: int) -> bytes:
    """Values of ``bits`` bits as byte planes: the top 8 bits, then the remaining low bits.

    Splitting at the top (not at bit 8) leaves the low plane with only ``bits - 8`` bits that
    vary, which the entropy coder stores in about that many bits instead of a full byte.
    """
    if bits <= 8:
        return levels.astype(np.uint8).tobytes()
    low = bits - 8
    return ((levels >> low).astype(np.uint8).tobytes()
            + (levels & ((1 << low) - 1)).astype(np.uint8).tobytes())


def _from_planes(raw: bytes, n: int, bits: int) -> np.ndarray:
    data = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    if bits <= 8:
        return data
    return (data[:n] << (bits - 8)) | data[n:]


def pack(q: QuantizedAtoms, coder: int | str | None = None) -> bytes:
    """The file bytes of ``q`` (format in the module docstring).

    ``coder`` picks the entropy coder by id or name; None tries all and keeps the smallest.
    """
    if not 0 < q.sample_rate < 2**32 or not 0 < q.length < 2**32:
        raise CodecError(f"sample rate {q.sample_rate} or length {q.length} does not fit uint32")
    payload = b"".join(_planes(q.levels[name], q.bits[name]) for name in q.bits)
    if coder is None:
        candidates = list(CODERS)
    else:
        ids = {v[0]: k for k, v in CODERS.items()}
        if coder not in CODERS and coder not in ids:
            raise CodecError(f"coder={coder!r}: use one of {sorted(ids)} or their ids {sorted(CODERS)}")
        candidates = [coder if coder in CODERS else ids[coder]]
    coded = min(((CODERS[c][1](payload), c) for c in candidates), key=lambda item: len(item[0]))
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, coded[1], int(q.has_chirp), q.sample_rate,
                          q.length, q.n_atoms)
    ranges = b"".join(_RANGE.pack(q.bits[name], *q.ranges[name]) for name in q.bits)
    return header + ranges + coded[0]


def read_header(data: bytes) -> dict[str, Any]:
    """The header fields of an atom file: version, coder, sample_rate, length, n_atoms, bits,
    ranges and ``header_bytes``. Raises :class:`CodecError` for anything that is not one."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise CodecError(f"not an atom file: it starts with {data[:4]!r}, expected {MAGIC!r}")
    _, version, coder, flags, sr, length, n = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CodecError(f"atom file version {version}; this labkit reads version {FORMAT_VERSION}")
    if coder not in CODERS:
        raise CodecError(f"atom file names entropy coder {coder}; known: {sorted(CODERS)}")
    names = STORED_ORDER if flags & 1 else STORED_ORDER[:-1]
    end = _HEADER.size + _RANGE.size * len(names)
    if len(data) < end:
        raise CodecError(f"atom file truncated: {len(data)} bytes, the header alone needs {end}")
    bits, ranges = {}, {}
    for i, name in enumerate(names):
        b, low, high = _RANGE.unpack_from(data, _HEADER.size + i * _RANGE.size)
        _check_bits(b)
        bits[name], ranges[name] = b, (float(low), float(high))
    return {"version": version, "coder": CODERS[coder][0], "coder_id": coder,
            "sample_rate": sr, "length": length, "n_atoms": n, "bits": bits, "ranges": ranges,
            "header_bytes": end}


def unpack(data: bytes) -> QuantizedAtoms:
    """Parse the file bytes back into :class:`QuantizedAtoms` (inverse of :func:`pack`)."""
    head = read_header(data)
    n = head["n_atoms"]
    try:
        payload = CODERS[head["coder_id"]][2](bytes(data)[head["header_bytes"]:])
    except (lzma.LZMAError, zlib.error, OSError, ValueError, EOFError) as err:
        raise CodecError(f"atom file payload is damaged ({err})") from err
    sizes = {name: n * (1 if b <= 8 else 2) for name, b in head["bits"].items()}
    if len(payload) != sum(sizes.values()):
        raise CodecError(f"atom file payload holds {len(payload)} bytes, expected "
                         f"{sum(sizes.values())} for {n} atoms")
    q = QuantizedAtoms(head["sample_rate"], head["length"], head["bits"], head["ranges"], {})
    offset = 0
    for name, size in sizes.items():
        q.levels[name] = _from_planes(payload[offset:offset + size], n, head["bits"][name])
        offset += size
    return q


def encode(params: Mapping[str, Any], sample_rate: int, length: int,
           bits: int | Mapping[str, int] = 8,
           ranges: Mapping[str, tuple[float, float]] | None = None,
           coder: int | str | None = None) -> bytes:
    """Atom parameters -> file bytes: :func:`quantize` then :func:`pack`."""
    return pack(quantize(params, sample_rate, length, bits, ranges), coder)


def decode(data: bytes) -> tuple[dict[str, torch.Tensor], int, int]:
    """File bytes -> ``(params, sample_rate, length)``; reads nothing but ``data``."""
    q = unpack(data)
    return dequantize(q), q.sample_rate, q.length


def decode_audio(data: bytes, support: float = 3.0) -> tuple[np.ndarray, int]:
    """File bytes -> ``(audio (1, samples) float32, sample_rate)``, rendered from ``data`` alone."""
    params, sr, length = decode(data)
    if params["amplitude"].shape[0] == 0:
        return np.zeros((1, length), dtype=np.float32), sr
    with torch.no_grad():
        y = render_atoms(params["amplitude"], params["centre"], params["width"],
                         params["frequency"], params["phase"], sr, length, params["chirp"],
                         support)
    return y.numpy()[None].astype(np.float32), sr


# --------------------------------------------------------------------------- statistics
def bitrate_kbps(n_bytes: int, samples: int, sr: int) -> float:
    """Bit rate in kbit/s (1000 bits per second) of ``n_bytes`` for ``samples`` at ``sr`` Hz."""
    if samples <= 0 or sr <= 0:
        raise LabkitError(f"samples={samples!r}, sr={sr!r}: expected a positive duration")
    return n_bytes * 8 / (samples / sr) / 1000


def compression_ratio(n_bytes: int, samples: int, channels: int = 1) -> float:
    """How many times smaller than 16-bit PCM of ``samples`` x ``channels`` (2 bytes each)."""
    if n_bytes <= 0:
        raise LabkitError(f"n_bytes={n_bytes!r}: expected a positive size")
    return 2 * samples * channels / n_bytes


def mel_distance(reference: Any, estimate: Any, sr: int, n_fft: int = 1024,
                 hop_length: int = 256, n_mels: int = 80, floor_db: float = -80.0) -> float:
    """Mean absolute difference of log-mel spectrograms in dB (0 = identical; lower is better).

    Both ``(..., samples)`` signals go through :func:`labkit.spectral.mel_spectrogram` (power);
    levels are in dB relative to the reference's peak, floored at ``floor_db`` so that silence
    does not dominate.
    """
    from labkit import spectral

    ref = torch.as_tensor(np.asarray(reference, dtype=np.float32))
    est = torch.as_tensor(np.asarray(estimate, dtype=np.float32))
    if ref.shape != est.shape:
        raise LabkitError(f"reference {tuple(ref.shape)} and estimate {tuple(est.shape)} differ")
    n_mels = min(n_mels, n_fft // 4)
    mel_ref = spectral.mel_spectrogram(ref, sr, n_fft, hop_length, n_mels)
    mel_est = spectral.mel_spectrogram(est, sr, n_fft, hop_length, n_mels)
    peak = float(mel_ref.max()) if float(mel_ref.max()) > 0 else 1.0
    db_ref = (10 * torch.log10(mel_ref / peak + 1e-12)).clamp_min(floor_db)
    db_est = (10 * torch.log10(mel_est / peak + 1e-12)).clamp_min(floor_db)
    return float((db_ref - db_est).abs().mean())


def codec_stats(reference: Any, data: bytes, decoded: np.ndarray | None = None) -> dict[str, Any]:
    """Size and quality of an encoded file against the ``reference`` audio ``(1, samples)``.

    Everything is measured: ``bytes`` is ``len(data)``; the audio scored is what
    :func:`decode_audio` renders from ``data`` (or ``decoded`` if already rendered from it).
    Returns ``n_atoms``, ``bytes``, ``header_bytes``, ``bits_per_atom``, ``kbps``, ``ratio``
    (against 16-bit PCM at the input's rate), ``snr``, ``si_snr`` (dB), ``lsd`` (bels) and
    ``mel_distance`` (dB).
    """
    from labkit import metrics

    head = read_header(data)
    if decoded is None:
        decoded, _ = decode_audio(data)
    ref = np.asarray(reference, dtype=np.float32).reshape(1, -1)
    if ref.shape[-1] != head["length"]:
        raise LabkitError(f"reference has {ref.shape[-1]} samples; the file encodes "
                          f"{head['length']}")
    sr, n = head["sample_rate"], len(data)
    return {
        "n_atoms": head["n_atoms"],
        "bytes": n,
        "header_bytes": head["header_bytes"],
        "bits_per_atom": 8 * n / head["n_atoms"] if head["n_atoms"] else math.inf,
        "kbps": bitrate_kbps(n, head["length"], sr),
        "ratio": compression_ratio(n, head["length"]),
        "snr": float(metrics.snr(ref, decoded)),
        "si_snr": float(metrics.si_sdr(ref, decoded)),
        "lsd": float(metrics.lsd(ref, decoded)),
        "mel_distance": mel_distance(ref, decoded, sr),
    }
