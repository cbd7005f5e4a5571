"""Audio files and arrays: load, save, check, resample, change channels, measure and set levels.

The course-wide contract: audio is float32 and channels first, ``(channels, samples)``; a batch
is ``(batch, channels, samples)``. Sample rates are in Hz.

- File functions (:func:`load`, :func:`info`, :func:`save`) read and write through ``soundfile``
  (libsndfile: WAV, FLAC, OGG Vorbis, Opus, MP3, AIFF, ... without ffmpeg) and return NumPy.
- Array helpers (:func:`validate`, :func:`resample`, :func:`to_mono`, :func:`to_channels`,
  :func:`pad_or_crop`, :func:`peak_normalize`, :func:`loudness_normalize`) accept a NumPy array
  or a torch tensor and return the same type; measurements (:func:`rms_db`, :func:`loudness`)
  return a Python float.

Decisions worth knowing:

- An array of shape ``(N, C)`` with more than 16 rows and at most 16 columns looks like
  ``(samples, channels)``; :func:`validate` (and so :func:`save`) rejects it with a hint to
  transpose, because reading it as thousands of channels is never what was meant.
- :func:`save` refuses sample rates a codec cannot store (Opus: 8/12/16/24/48 kHz; MP3: 8 to
  48 kHz) instead of resampling behind your back: resample explicitly, then save.
- Default subtypes keep what you computed: WAV/AIFF/CAF/W64/RF64 as 32-bit float, FLAC as 24-bit.
  Integer subtypes clip at full scale (libsndfile clips, it does not wrap); :func:`save` warns then.
- MP3 written with libsndfile's default (variable bit rate) carries gapless information, so it
  reads back with the original length and no delay. Constant-bit-rate MP3 at low rates lacks it
  and reads back with the encoder delay in front (1105 samples measured at 16 kHz) and padding
  at the end: align by cross-correlation before comparing samples.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from labkit.errors import AudioError

#: File extensions labkit reads and writes through soundfile (libsndfile 1.2). Reading detects the
#: format from the file's content, so these are what :func:`save` accepts and what errors list.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf",
    ".w64", ".rf64",
)

# extension -> (libsndfile format, default subtype). Given explicitly because save() writes to a
# temporary name whose extension soundfile could not interpret, and because .opus and .oga are
# not in soundfile's own extension table.
_WRITE_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "FLOAT"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aiff": ("AIFF", "FLOAT"),
    ".aif": ("AIFF", "FLOAT"),
    ".aifc": ("AIFF", "FLOAT"),
    ".au": ("AU", "FLOAT"),
    ".caf": ("CAF", "FLOAT"),
    ".w64": ("W64", "FLOAT"),
    ".rf64": ("RF64", "FLOAT"),
}

#: Sample rates (Hz) the codecs with fixed rate sets can store.
OPUS_SAMPLE_RATES: tuple[int, ...] = (8000, 12000, 16000, 24000, 48000)
MP3_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

_MAX_CHANNELS_GUESS = 16  # more rows than this with few columns looks like (samples, channels)
_ACCEPTED = ", ".join(SUPPORTED_EXTENSIONS)


# --------------------------------------------------------------------------- small helpers
def _is_torch(x: Any) -> bool:
    # Checking sys.modules keeps torch out of the import of this module: file I/O should not pay
    # for loading torch.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: Any) -> np.ndarray:
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_rate(name: str, sr: Any) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)):
        raise AudioError(f"{name}={sr!r}: expected a positive whole number of Hz, e.g. 44100")
    if not (sr > 0 and float(sr).is_integer()):
        raise AudioError(f"{name}={sr!r}: expected a positive whole number of Hz, e.g. 44100")
    return int(sr)


def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SUPPORTED_EXTENSIONS)
        hint = f"; audio files inside: {', '.join(inside[:5])}" if inside else ""
        raise AudioError(f"'{path}' is a folder, not an audio file{hint}")
    if not path.exists():
        raise AudioError(f"'{path}': no such file (expected an audio file: {_ACCEPTED})")
    return path


def _unreadable(path: Path, err: Exception) -> AudioError:
    return AudioError(
        f"'{path}': cannot read it as audio ({err}); it may be corrupt or in a format libsndfile "
        f"does not read. Accepted formats: {_ACCEPTED}"
    )


# --------------------------------------------------------------------------- checking arrays
def validate(audio: Any, name: str = "audio", allow_1d: bool = True) -> Any:
    """Check that ``audio`` is usable audio and return it unchanged.

    Accepts a NumPy array or torch tensor of real floats, ``(channels, samples)``, or
    ``(samples,)`` (mono) when ``allow_1d``. Raises :class:`~labkit.errors.AudioError`, naming
    ``name``, for: another type, a non-float dtype, 0-D or 3-D+ shapes, no samples, a shape that
    looks like ``(samples, channels)`` (more than 16 rows, at most 16 columns), and NaN/Inf.
    """
    if not (isinstance(audio, np.ndarray) or _is_torch(audio)):
        raise AudioError(
            f"{name}: expected a NumPy array or torch tensor, got {type(audio).__name__}"
        )
    shape = tuple(audio.shape)
    accepted = "(channels, samples) or (samples,)" if allow_1d else "(channels, samples)"
    if len(shape) == 1 and not allow_1d:
        raise AudioError(f"{name} has shape {shape}; expected {accepted}: use audio[None] for mono")
    if len(shape) not in (1, 2):
        raise AudioError(f"{name} has shape {shape}; expected {accepted}")
    floating = audio.is_floating_point() if _is_torch(audio) else np.issubdtype(
        audio.dtype, np.floating
    )
    if not floating:
        raise AudioError(
            f"{name} has dtype {audio.dtype}; expected real floats in [-1, 1] "
            "(for int16 samples: audio.astype(np.float32) / 32768)"
        )
    if 0 in shape:
        raise AudioError(f"{name} has shape {shape}: it holds no samples")
    if len(shape) == 2 and shape[0] > _MAX_CHANNELS_GUESS and shape[1] <= _MAX_CHANNELS_GUESS:
        raise AudioError(
            f"{name} has shape {shape}, which looks like (samples, channels); labkit audio is "
            "channels first (channels, samples): pass audio.T"
        )
    bad = ~(sys.modules["torch"].isfinite(audio) if _is_torch(audio) else np.isfinite(audio))
    if bad.any():
        values = _to_numpy(audio)
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise AudioError(
            f"{name} contains {n_nan} NaN and {n_inf} Inf samples (first at index {first}); "
            "expected finite values"
        )
    return audio


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header: rate (Hz), channels, frames, seconds, codec."""

    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str
    subtype: str


def info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of the audio file at ``path`` without decoding its samples."""
    path = _check_path(path)
    try:
        i = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as err:
        raise _unreadable(path, err) from err
    return AudioInfo(
        sample_rate=int(i.samplerate), channels=int(i.channels), frames=int(i.frames),
        duration=float(i.frames / i.samplerate), format=str(i.format), subtype=str(i.subtype),
    )


def load(path: str | os.PathLike, sr: int | None = None, mono: bool = False,
         channels: int | None = None, offset: float = 0.0,
         duration: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``(channels, samples)`` and its sample rate.

    Only the frames from ``offset`` seconds for ``duration`` seconds are decoded (all to the
    end when ``duration`` is None; fewer when the file ends first). ``sr`` resamples (soxr, high
    quality) to that rate; ``mono=True`` averages the channels (same as ``channels=1``);
    ``channels`` converts with :func:`to_channels`. Returns ``(audio, sample_rate)``.

    Raises :class:`~labkit.errors.AudioError` naming the path for a missing file, a folder, an
    unreadable/unsupported/corrupt file, an offset past the end, no samples, and NaN/Inf.
    """
    path = _check_path(path)
    if sr is not None:
        sr = _check_rate("sr", sr)
    if mono and channels not in (None, 1):
        raise AudioError(f"mono=True asks for 1 channel but channels={channels!r}: pass one of them")
    if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int)
                                 or channels < 1):
        raise AudioError(f"channels={channels!r}: expected a positive whole number")
    if not (offset >= 0 and math.isfinite(offset)):
        raise AudioError(f"offset={offset!r}: expected a number of seconds >= 0")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise AudioError(f"duration={duration!r}: expected a number of seconds > 0, or None")
    try:
        with sf.SoundFile(str(path)) as f:
            file_sr, total = int(f.samplerate), int(f.frames)
            if total == 0:
                raise AudioError(f"'{path}' holds no samples (0 frames); expected non-empty audio")
            start = round(offset * file_sr)
            if start >= total:
                raise AudioError(
                    f"offset={offset} s is past the end of '{path}' ({total / file_sr:.3f} s); "
                    f"expected an offset below {total / file_sr:.3f} s"
                )
            count = total - start if duration is None else min(round(duration * file_sr),
                                                               total - start)
            if start:
                f.seek(start)
            data = f.read(max(count, 1), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.SoundFileError, RuntimeError) as err:
        raise _unreadable(path, err) from err
    if data.shape[0] == 0:
        raise AudioError(f"'{path}' holds no samples that could be decoded; expected audio data")
    audio = np.ascontiguousarray(data.T)
    validate(audio, name=f"'{path}'")
    if mono:
        channels = 1
    if channels is not None:
        audio = to_channels(audio, channels)
    if sr is not None and sr != file_sr:
        audio = resample(audio, file_sr, sr)
        file_sr = sr
    return audio.astype(np.float32, copy=False), file_sr


def save(path: str | os.PathLike, audio: Any, sr: int, subtype: str | None = None,
         compression_level: float | None = None, bitrate_mode: str | None = None) -> Path:
    """Write ``audio`` (``(channels, samples)`` or ``(samples,)``, NumPy or torch) to ``path``.

    The format follows the extension (see ``SUPPORTED_EXTENSIONS``); ``subtype`` overrides the
    default (WAV: ``"FLOAT"``, FLAC: ``"PCM_24"``, e.g. ``"PCM_16"``); ``compression_level``
    (0 to 1) and ``bitrate_mode`` (``"CONSTANT"``, ``"AVERAGE"``, ``"VARIABLE"``) reach the lossy
    encoders. Parent folders are created. The file is written to a temporary name in the same
    folder and renamed into place, so a failure leaves no partial file. Returns the path.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        raise AudioError(f"'{path}': cannot tell the format from '{ext or '(no extension)'}'; "
                         f"use one of {_ACCEPTED}")
    validate(audio, name=f"audio to save to '{path}'")
    sr = _check_rate("sr", sr)
    data = _to_numpy(audio).astype(np.float32, copy=False)
    if data.ndim == 1:
        data = data[None]
    fmt, default_subtype = _WRITE_FORMATS[ext]
    subtype = (subtype or default_subtype).upper()
    if not sf.check_format(fmt, subtype):
        raise AudioError(f"'{path}': {fmt} files cannot hold subtype {subtype!r}; use one of "
                         f"{', '.join(sf.available_subtypes(fmt))}")
    if subtype == "OPUS" and sr not in OPUS_SAMPLE_RATES:
        raise AudioError(f"'{path}': Opus stores only {OPUS_SAMPLE_RATES} Hz, not {sr}; resample "
                         f"first, e.g. labkit.audio.resample(audio, {sr}, 48000)")
    if fmt == "MP3" and sr not in MP3_SAMPLE_RATES:
        raise AudioError(f"'{path}': MP3 stores only {MP3_SAMPLE_RATES} Hz, not {sr}; resample "
                         f"first, e.g. labkit.audio.resample(audio, {sr}, 44100)")
    peak = float(np.abs(data).max())
    if subtype.startswith(("PCM", "ULAW", "ALAW", "DPCM", "DWVW")) and peak > 1.0:
        warnings.warn(f"saving '{path}' as {subtype} clips samples beyond ±1 (peak {peak:.3f}); "
                      "use subtype='FLOAT' or peak_normalize first", stacklevel=2)
    if path.is_dir():
        raise AudioError(f"'{path}' is a folder; expected a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    extra = {k: v for k, v in (("compression_level", compression_level),
                               ("bitrate_mode", bitrate_mode)) if v is not None}
    try:
        with sf.SoundFile(tmp, "w", samplerate=sr, channels=data.shape[0], subtype=subtype,
                          format=fmt, **extra) as f:
            f.write(np.ascontiguousarray(data.T))
        os.chmod(tmp, 0o644)  # mkstemp makes files private (0600); audio files are not secrets
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (sf.SoundFileError, RuntimeError)):
            raise AudioError(f"'{path}': could not write {fmt}/{subtype} at {sr} Hz with "
                             f"{data.shape[0]} channels ({err})") from err
        raise
    return path


# --------------------------------------------------------------------------- resampling
def resample(audio: Any, sr_in: int, sr_out: int) -> Any:
    """Resample ``audio`` ``(..., samples)`` from ``sr_in`` to ``sr_out`` Hz along the last axis.

    NumPy uses soxr (quality ``"HQ"``); torch uses ``torchaudio.functional.resample`` with a
    64-zero-crossing Kaiser windowed sinc (the "kaiser_best" setting), on the tensor's device.
    Returns the input itself when the rates are equal. Output length is about
    ``samples * sr_out / sr_in``.
    """
    sr_in, sr_out = _check_rate("sr_in", sr_in), _check_rate("sr_out", sr_out)
    if sr_in == sr_out:
        return audio
    if _is_torch(audio):
        import torchaudio.functional

        x = audio if audio.is_floating_point() else audio.float()
        return torchaudio.functional.resample(
            x, sr_in, sr_out, lowpass_filter_width=64, rolloff=0.9475937167399596,
            resampling_method="sinc_interp_kaiser", beta=14.769656459379492,
        )
    import soxr

    x = np.asarray(audio)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise AudioError(f"audio has shape {x.shape}; expected (..., samples) with samples > 0")
    lead = x.shape[:-1]
    # soxr wants (samples, channels); every leading index becomes one channel.
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]).T)
    out = soxr.resample(flat, sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out.T).reshape(*lead, out.shape[0])


# --------------------------------------------------------------------------- channels and length
def _channels_first(audio: Any) -> Any:
    if audio.ndim == 0:
        raise AudioError("audio is a scalar; expected (channels, samples) or (samples,)")
    return audio[None] if audio.ndim == 1 else audio


def to_mono(audio: Any) -> Any:
    """Average the channels: ``(..., channels, samples)`` -> ``(..., 1, samples)``.

    A 1-D ``(samples,)`` input is already mono and comes back as ``(1, samples)``.
    """
    audio = _channels_first(audio)
    if _is_torch(audio):
        return audio.mean(dim=-2, keepdim=True)
    return audio.mean(axis=-2, keepdims=True, dtype=audio.dtype)


def to_channels(audio: Any, channels: int) -> Any:
    """Convert ``(..., C, samples)`` to ``(..., channels, samples)``.

    1 -> N duplicates the signal, N -> 1 averages, C -> C returns the input; other conversions
    (e.g. 6 -> 2) need a downmix matrix that depends on the layout, so they raise AudioError.
    A 1-D input counts as one channel.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise AudioError(f"channels={channels!r}: expected a positive whole number")
    audio = _channels_first(audio)
    have = audio.shape[-2]
    if have == channels:
        return audio
    if channels == 1:
        return to_mono(audio)
    if have == 1:
        if _is_torch(audio):
            return audio.expand(*audio.shape[:-2], channels, audio.shape[-1]).contiguous()
        return np.repeat(audio, channels, axis=-2)
    raise AudioError(
        f"cannot convert {have} channels to {channels}: only 1 -> N (duplicate) and N -> 1 "
        "(average) are defined; mix the channels yourself for other layouts"
    )


def pad_or_crop(audio: Any, length: int,
                align: Literal["start", "center", "end"] = "start") -> Any:
    """Zero-pad or crop the last axis of ``audio`` ``(..., samples)`` to ``length`` samples.

    ``align="start"`` keeps the beginning (pads/crops at the end), ``"end"`` keeps the end,
    ``"center"`` keeps the middle (an odd leftover goes to the end).
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise AudioError(f"length={length!r}: expected a positive whole number of samples")
    if align not in ("start", "center", "end"):
        raise AudioError(f"align={align!r}: expected 'start', 'center' or 'end'")
    have = audio.shape[-1]
    if have >= length:
        start = {"start": 0, "center": (have - length) // 2, "end": have - length}[align]
        return audio[..., start:start + length]
    missing = length - have
    before = {"start": 0, "center": missing // 2, "end": missing}[align]
    after = missing - before
    if _is_torch(audio):
        import torch.nn.functional

        return torch.nn.functional.pad(audio, (before, after))
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(before, after)])


# --------------------------------------------------------------------------- levels
def db_to_gain(db: Any) -> Any:
    """Decibels to a linear amplitude gain: ``10 ** (db / 20)`` (float, NumPy or torch)."""
    return 10.0 ** (db / 20.0)


def gain_to_db(gain: Any) -> Any:
    """Linear amplitude gain to decibels: ``20 log10 |gain|``; 0 gives -inf without a warning."""
    if _is_torch(gain):
        return 20.0 * gain.abs().log10()
    if isinstance(gain, np.ndarray):
        with np.errstate(divide="ignore"):
            return 20.0 * np.log10(np.abs(gain))
    gain = abs(float(gain))
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


def peak_normalize(audio: Any, peak: float = 0.99) -> tuple[Any, float]:
    """Scale ``audio`` so that its largest absolute sample is ``peak``. Returns ``(audio, gain)``.

    All-silent audio comes back unchanged with gain 1.
    """
    if not peak > 0:
        raise AudioError(f"peak={peak!r}: expected a positive amplitude, e.g. 0.99")
    values = _to_numpy(audio)
    current = float(np.abs(values).max()) if values.size else 0.0
    gain = 1.0 if current == 0 else peak / current
    return audio * gain, gain


def rms_db(audio: Any) -> float:
    """Root-mean-square level of all samples in dB relative to full scale (1.0); silence: -inf."""
    x = _to_numpy(audio).astype(np.float64)
    mean_square = float(np.mean(np.square(x))) if x.size else 0.0
    return 10.0 * math.log10(mean_square) if mean_square > 0 else -math.inf


def k_weighting(sr: int) -> np.ndarray:
    """The two biquads of the BS.1770 K-weighting filter at ``sr`` Hz as SOS, shape ``(2, 6)``.

    Stage 1 is the high shelf (+4 dB above ~1.7 kHz, head effects), stage 2 the RLB high pass
    (~38 Hz). Coefficients come from the analog prototypes (as libebur128 derives them), which
    reproduce the 48 kHz table of ITU-R BS.1770-4 and extend it to any rate.
    """
    sr = _check_rate("sr", sr)
    # high shelf
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sr)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0,
             (vh - vb * k / q + k * k) / a0, 1.0, 2.0 * (k * k - 1.0) / a0,
             (1.0 - k / q + k * k) / a0]
    # high pass; BS.1770 keeps its numerator at [1, -2, 1] (unnormalised), and the -0.691 dB
    # constant in the loudness formula is calibrated with exactly that gain.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sr)
    a0 = 1.0 + k / q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, high_pass])


def _channel_weights(channels: int) -> np.ndarray:
    weights = np.ones(channels)
    # BS.1770 weights the surround channels by 1.41 and leaves out the LFE; labkit assumes the
    # ITU order L, R, C, (LFE,) Ls, Rs for 5- and 6-channel audio and weight 1 otherwise.
    if channels == 5:
        weights[3:] = 1.41
    elif channels == 6:
        weights[3], weights[4:] = 0.0, 1.41
    return weights


def loudness(audio: Any, sr: int) -> float:
    """Integrated loudness of ``audio`` (``(channels, samples)`` or ``(samples,)``) in LUFS.

    ITU-R BS.1770-4: K-weighting at ``sr``, mean square per channel in 400 ms blocks with 75 %
    overlap, channel weights, an absolute gate at -70 LUFS and a relative gate 10 LU below the
    loudness of the blocks that passed it. A full-scale 997 Hz sine reads -3.01 LUFS in mono and
    0.00 LUFS in both channels of a stereo file. Silence (or anything gated out): -inf.
    Needs at least 400 ms of audio; use :func:`rms_db` for shorter clips.
    """
    validate(audio)
    sr = _check_rate("sr", sr)
    x = _to_numpy(audio).astype(np.float64)
    if x.ndim == 1:
        x = x[None]
    block, step = round(0.4 * sr), round(0.1 * sr)
    if x.shape[-1] < block:
        raise AudioError(f"loudness needs at least 400 ms ({block} samples at {sr} Hz), got "
                         f"{x.shape[-1]} samples; use rms_db for shorter clips")
    from scipy.signal import sosfilt

    weighted = sosfilt(k_weighting(sr), x, axis=-1)
    # Block mean squares from a running sum: one pass instead of one sum per block.
    energy = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(weighted ** 2, axis=-1)],
                            axis=-1)
    starts = np.arange(0, x.shape[-1] - block + 1, step)
    mean_square = (energy[:, starts + block] - energy[:, starts]) / block
    power = _channel_weights(x.shape[0]) @ mean_square  # one value per block
    # Gates compared in the power domain so that silent blocks never meet log10(0).
    absolute = power > 10.0 ** ((-70.0 + 0.691) / 10.0)
    if not absolute.any():
        return -math.inf
    relative = power > power[absolute].mean() * 10.0 ** (-10.0 / 10.0)
    gated = power[absolute & relative]
    return -0.691 + 10.0 * math.log10(gated.mean())


def loudness_normalize(audio: Any, sr: int,
                       target_lufs: float = -23.0) -> tuple[Any, float]:
    """Scale ``audio`` to an integrated loudness of ``target_lufs`` (BS.1770). Returns
    ``(audio, gain)``.

    -23 LUFS is the EBU R128 broadcast target. Loud targets can push peaks past full scale:
    check with :func:`peak_normalize` before saving to an integer format. Silence comes back
    unchanged with gain 1.
    """
    if not math.isfinite(target_lufs):
        raise AudioError(f"target_lufs={target_lufs!r}: expected a finite loudness, e.g. -23.0")
    current = loudness(audio, sr)
    if current == -math.inf:
        return audio, 1.0
    gain = float(db_to_gain(target_lufs - current))
    return audio * gain, gain
