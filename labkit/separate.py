"""Run a separation model on a whole song of any length, rate and channel count.

A model sees fixed-length chunks at its own sample rate and channel count; a song is minutes long
at whatever rate it was recorded. :func:`separate` bridges the two: it converts the audio to the
model's format, cuts it into overlapping chunks (zero-padding the end, so audio shorter than one
chunk works too), runs the model on batches of chunks, cross-fades the chunks back together and
converts the result back to the input's rate and channels. :func:`separate_file` does the same
from a file to one WAV per stem, reading and writing in blocks.

The work is streamed: resampling (soxr, the settings of :func:`labkit.audio.resample`), chunking
and overlap-add keep only about one chunk x batch of audio in flight, so working memory does not
grow with the song. Only the result of :func:`separate` (an array of the whole song per source)
does; :func:`separate_file` writes blocks as they are finished and stays bounded.

The model protocol (:class:`Separator`): a ``torch.nn.Module`` with ``sample_rate`` (Hz),
``channels`` (1 or 2), ``sources`` (stem names, in output order), optionally ``chunk_seconds``
(its preferred chunk length) and ``valid_length(n) -> int`` (a length >= n it accepts), whose
``forward`` maps a mixture ``(batch, channels, samples)`` to estimates ``(batch, sources,
channels, samples)``. Spectrogram models are wrapped into this protocol by their own module.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from labkit.errors import AudioError, LabkitError

__all__ = ["DEFAULT_CHUNK_SECONDS", "Separator", "chunk_starts", "crossfade_window", "separate",
           "separate_file"]

DEFAULT_CHUNK_SECONDS = 10.0
"""Chunk length when neither the call nor the model names one."""

_BLOCK_SECONDS = 4.0  # how much audio is read, resampled or written at a time


@runtime_checkable
class Separator(Protocol):
    """What :func:`separate` needs from a model (see the module docstring).

    Optional: ``chunk_seconds: float`` and ``valid_length(n: int) -> int``.
    """

    sample_rate: int
    channels: int
    sources: tuple[str, ...]

    def __call__(self, mixture: Any) -> Any:
        """``(batch, channels, samples)`` -> ``(batch, sources, channels, samples)``."""


# --------------------------------------------------------------------------- chunk layout
def crossfade_window(length: int, fade: int, fade_in: bool = True, fade_out: bool = True
                     ) -> np.ndarray:
    """Weights ``(length,)`` for one chunk of an overlap-add with ``fade`` samples of overlap.

    A raised-cosine ramp over the first ``fade`` samples (if ``fade_in``) and the mirrored ramp over
    the last ``fade`` samples (if ``fade_out``), 1 elsewhere. The fade-out ramp is exactly one minus
    the fade-in ramp, so chunks placed ``length - fade`` apart add up to weight one everywhere; the
    first chunk has no fade-in and the last no fade-out, so the song's edges have weight one too.
    Needs ``2 * fade <= length``.
    """
    if not 0 <= 2 * fade <= length:
        raise ValueError(f"fade={fade} must lie in [0, length/2] = [0, {length // 2}]")
    window = np.ones(length, dtype=np.float64)
    if fade:
        ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade) ** 2
        if fade_in:
            window[:fade] = ramp
        if fade_out:
            window[length - fade:] = 1.0 - ramp
    return window.astype(np.float32)


def chunk_starts(n_samples: int, chunk: int, hop: int) -> list[int]:
    """Start positions of the chunks covering ``n_samples``: ``0, hop, 2 hop, ...``.

    The last chunk is the first that reaches the end (``start + chunk >= n_samples``); it is
    zero-padded past the end. Always at least one chunk.
    """
    if n_samples <= chunk:
        return [0]
    return [k * hop for k in range(math.ceil((n_samples - chunk) / hop) + 1)]


# --------------------------------------------------------------------------- the model
def _model_format(model: Any) -> tuple[int, int, tuple[str, ...]]:
    """(sample_rate, channels, sources) of a :class:`Separator`, checked."""
    missing = [a for a in ("sample_rate", "channels", "sources") if not hasattr(model, a)]
    if missing:
        raise LabkitError(f"{type(model).__name__} lacks {', '.join(missing)}: a separation model "
                          "needs sample_rate (Hz), channels (1 or 2) and sources (stem names)")
    rate, channels, sources = model.sample_rate, model.channels, tuple(model.sources)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise LabkitError(f"model.sample_rate={rate!r}: expected a positive whole number of Hz")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise LabkitError(f"model.channels={channels!r}: expected 1 or 2")
    if not sources or not all(isinstance(s, str) for s in sources):
        raise LabkitError(f"model.sources={sources!r}: expected a tuple of stem names")
    return rate, channels, sources


def _chunk_sizes(model: Any, chunk_seconds: float | None, overlap: float) -> tuple[int, int]:
    """(chunk, fade) in model samples."""
    seconds = chunk_seconds if chunk_seconds is not None else (
        getattr(model, "chunk_seconds", None) or DEFAULT_CHUNK_SECONDS)
    if not seconds > 0:
        raise ValueError(f"chunk_seconds={seconds!r}: expected a positive number of seconds")
    if not 0 <= overlap <= 0.5:
        raise ValueError(f"overlap={overlap!r}: expected a fraction of a chunk in [0, 0.5]")
    chunk = max(1, round(seconds * model.sample_rate))
    if hasattr(model, "valid_length"):
        valid = int(model.valid_length(chunk))
        if valid < chunk:
            raise LabkitError(f"model.valid_length({chunk}) = {valid} is shorter than asked; it "
                              "must return a length >= its argument")
        chunk = valid
    return chunk, min(round(overlap * chunk), chunk // 2)


@contextlib.contextmanager
def _inference(model: Any, device: Any):
    """Eval mode, inference mode and (on CUDA) autocast; restores the model's training flag."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield device
    finally:
        model.train(was_training)


def _resolve_device(model: Any, device: Any):
    import torch

    if device is not None:
        device = torch.device(device)
        model.to(device)
        return device
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _run_model(model: Any, chunks: list[np.ndarray], device: Any, n_sources: int
               ) -> np.ndarray:
    """Model outputs ``(batch, sources, channels, chunk)`` float32 for ``chunks`` ``(channels,
    chunk)``."""
    import torch

    x = torch.from_numpy(np.stack(chunks)).to(device)
    autocast = (torch.autocast(device_type="cuda") if device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        y = model(x)
    expected = (x.shape[0], n_sources, *x.shape[1:])
    if tuple(y.shape) != expected:
        raise LabkitError(f"{type(model).__name__} returned shape {tuple(y.shape)} for input "
                          f"{tuple(x.shape)}; expected (batch, sources, channels, samples) = "
                          f"{expected}")
    return y.float().cpu().numpy()


# --------------------------------------------------------------------------- streaming stages
def _chunks(blocks: Iterable[np.ndarray], chunk: int, hop: int
            ) -> Iterator[tuple[np.ndarray, bool, int]]:
    """Cut a stream of blocks ``(channels, k)`` into chunks: ``(audio (channels, chunk), last,
    samples left in this chunk)``.

    Chunks start ``hop`` apart; the last (the first that reaches the end of the stream) is
    zero-padded. One sample past a chunk is read before it is cut, to know whether it is the last.
    Only the audio from the current chunk on is kept.
    """
    buffer: np.ndarray | None = None  # holds the stream from `start` on
    start, total, ended = 0, 0, False
    stream = iter(blocks)
    while True:
        while not ended and (buffer is None or buffer.shape[-1] < chunk + 1):
            block = next(stream, None)
            if block is None:
                ended = True
            elif block.shape[-1]:
                total += block.shape[-1]
                buffer = block if buffer is None else np.concatenate([buffer, block], axis=-1)
        if buffer is None:
            raise AudioError("the audio holds no samples")
        last = ended and start + chunk >= total
        piece = buffer[:, :chunk]
        if piece.shape[-1] < chunk:
            piece = np.pad(piece, ((0, 0), (0, chunk - piece.shape[-1])))
        yield np.ascontiguousarray(piece, dtype=np.float32), last, min(chunk, total - start)
        if last:
            return
        start += hop
        buffer = buffer[:, hop:]


def _overlap_add(model: Any, blocks: Iterable[np.ndarray], chunk: int, fade: int,
                 batch_size: int, device: Any, n_sources: int, progress: Callable[[int], Any]
                 ) -> Iterator[np.ndarray]:
    """Separate a stream of model-format blocks; yields finished output blocks ``(sources,
    channels, k)`` in order, together exactly as long as the input stream."""
    hop = chunk - fade
    windows = {(i, o): crossfade_window(chunk, fade, i, o) for i in (True, False)
               for o in (True, False)}
    accumulator: np.ndarray | None = None  # covers the current chunk's samples
    first = True
    pending: list[tuple[np.ndarray, bool, int]] = []

    def flush() -> Iterator[np.ndarray]:
        nonlocal accumulator, first
        outputs = _run_model(model, [p[0] for p in pending], device, n_sources)
        progress(len(pending))
        for out, (_, last, valid) in zip(outputs, pending):
            if accumulator is None:
                accumulator = np.zeros(out.shape, dtype=np.float32)
            accumulator += out * windows[(not first, not last)]
            first = False
            if last:
                yield accumulator[..., :valid].copy()
                return
            # Samples before the next chunk's start get no more contributions: they are final.
            yield accumulator[..., :hop].copy()
            accumulator = np.concatenate(
                [accumulator[..., hop:], np.zeros((*out.shape[:-1], hop), np.float32)], axis=-1)
        pending.clear()

    for item in _chunks(blocks, chunk, hop):
        pending.append(item)
        if len(pending) == batch_size or item[1]:
            yield from flush()


class _Converter:
    """Streamed change of rate and channels for ``(..., channels, k)`` blocks.

    Down-mixes before resampling and up-mixes after, so the resampler sees the fewest channels;
    uses soxr "HQ" like :func:`labkit.audio.resample`, whose whole-array output it reproduces.
    """

    def __init__(self, rate_in: int, rate_out: int, channels_in: int, channels_out: int,
                 lead: int = 1):
        import soxr

        self.channels_in, self.channels_out = channels_in, channels_out
        self.stream = None
        if rate_in != rate_out:
            self.stream = soxr.ResampleStream(rate_in, rate_out,
                                              lead * min(channels_in, channels_out),
                                              dtype="float32", quality="HQ")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        from labkit.audio import to_channels

        if self.channels_out < self.channels_in:
            block = to_channels(block, self.channels_out)
        if self.stream is not None:
            shape = block.shape[:-1]
            flat = block.reshape(math.prod(shape), block.shape[-1]).T
            out = self.stream.resample_chunk(np.ascontiguousarray(flat, np.float32), last=last)
            block = out.T.reshape(*shape, out.shape[0])
        if self.channels_out > self.channels_in:
            block = to_channels(block, self.channels_out)
        return np.asarray(block, dtype=np.float32)

    def stream_all(self, blocks: Iterable[np.ndarray], empty: np.ndarray) -> Iterator[np.ndarray]:
        """Convert every block, then flush the resampler's tail (``empty``: a 0-sample block)."""
        for block in blocks:
            yield self(block)
        if self.stream is not None:
            yield self(empty, last=True)


def _pipeline(model: Any, blocks: Iterable[np.ndarray], sr: int, channels: int,
              keep: Sequence[int], chunk_seconds: float | None, overlap: float, batch_size: int,
              device: Any, progress: bool, expected_samples: int
              ) -> Iterator[np.ndarray]:
    """Input blocks ``(channels, k)`` at ``sr`` -> output blocks ``(len(keep), channels, k)`` at
    ``sr``; ``keep`` picks the model's sources. Must run inside :func:`_inference`."""
    from tqdm.auto import tqdm

    rate, model_channels, sources = _model_format(model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive whole number")
    chunk, fade = _chunk_sizes(model, chunk_seconds, overlap)
    to_model = _Converter(sr, rate, channels, model_channels)
    from_model = _Converter(rate, sr, model_channels, channels, lead=len(keep))
    model_samples = math.ceil(expected_samples * rate / sr)
    bar = tqdm(total=len(chunk_starts(model_samples, chunk, chunk - fade)), unit="chunk",
               desc="separating", disable=not progress)
    with bar:
        model_blocks = to_model.stream_all(blocks, np.zeros((channels, 0), np.float32))
        separated = _overlap_add(model, model_blocks, chunk, fade, batch_size, device,
                                 len(sources), bar.update)
        yield from from_model.stream_all(
            (block[list(keep)] for block in separated),
            np.zeros((len(keep), model_channels, 0), np.float32))


# --------------------------------------------------------------------------- public API
def separate(model: Any, audio: Any, sr: int, chunk_seconds: float | None = None,
             overlap: float = 0.25, batch_size: int = 1, device: Any = None,
             progress: bool = True) -> np.ndarray:
    """Separate ``audio`` with ``model`` (a :class:`Separator`), any length, rate and channels.

    ``audio``: ``(channels, samples)`` or ``(samples,)``, NumPy or torch, at ``sr`` Hz. It is
    converted to the model's rate and channels, cut into chunks of ``chunk_seconds`` (default: the
    model's ``chunk_seconds``, else 10 s; rounded up by ``model.valid_length``) overlapping by
    ``overlap`` of a chunk (at most 0.5), run ``batch_size`` chunks at a time in eval and inference
    mode (autocast on CUDA only), cross-faded (:func:`crossfade_window`) and converted back.
    ``device``: None runs where the model's parameters are; a device moves the model there.

    Returns float32 ``(sources, channels, samples)`` with the input's channels, rate and length,
    sources in ``model.sources`` order. Raises AudioError for unusable audio (see
    :func:`labkit.audio.validate`).
    """
    from labkit.audio import _check_rate, validate

    validate(audio, name="audio")
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio[None] if audio.ndim == 1 else audio
    sr = _check_rate("sr", sr)
    _, _, sources = _model_format(model)
    channels, n = audio.shape
    block = max(1, round(_BLOCK_SECONDS * sr))
    out = np.zeros((len(sources), channels, n), dtype=np.float32)
    position = 0
    with _inference(model, _resolve_device(model, device)) as dev:
        blocks = (audio[:, i:i + block] for i in range(0, n, block))
        for piece in _pipeline(model, blocks, sr, channels, range(len(sources)), chunk_seconds,
                               overlap, batch_size, dev, progress, n):
            # Resampling there and back can end a sample short or long: fix the length to the input.
            take = min(piece.shape[-1], n - position)
            out[..., position:position + take] = piece[..., :take]
            position += take
    return out


def _read_blocks(sound_file: Any, path: Path, block: int) -> Iterator[np.ndarray]:
    """Blocks ``(channels, k)`` float32 of an open soundfile; AudioError naming ``path``."""
    import soundfile as sf

    position = 0
    while True:
        try:
            data = sound_file.read(block, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioError(f"'{path}': reading failed after {position} frames ({err})") from err
        if not len(data):
            if position == 0:
                raise AudioError(f"'{path}' holds no samples; expected non-empty audio")
            return
        if not np.isfinite(data).all():
            raise AudioError(f"'{path}' holds NaN or Inf samples near frame {position}")
        position += len(data)
        yield np.ascontiguousarray(data.T)


def _open(path: Path) -> Any:
    """The audio file at ``path`` opened for reading; AudioError naming it if that fails."""
    import soundfile as sf

    try:
        return sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(f"'{path}': cannot open it as audio ({err})") from err


def separate_file(path: str | os.PathLike, model: Any, out_dir: str | os.PathLike | None = None,
                  stems: Sequence[str] | None = None, progress: bool = True, **kw: Any
                  ) -> dict[str, Path]:
    """Separate the audio file at ``path`` into ``<out>/<name>_separated/<name>_<stem>.wav``.

    ``out`` is ``out_dir`` (default: the input's folder), ``name`` the input's file name without
    its extension. ``stems``: which of ``model.sources`` to write (default all). Files are 32-bit
    float WAV at the input's sample rate, channel count and length. ``kw`` go to the chunking as
    in :func:`separate` (``chunk_seconds``, ``overlap``, ``batch_size``, ``device``).

    The file is streamed (read, resampled, separated and written in blocks), so memory stays
    bounded however long the song. Every stem is written to a temporary file and renamed into
    place only when all succeeded; on any failure (including Ctrl-C) the temporary files are
    removed, as is the output folder if this call created it, and the error is re-raised. A missing
    or unreadable input raises AudioError naming the file. Returns ``{stem: path}``.
    """
    import soundfile as sf

    from labkit.audio import info

    unknown = {k for k in kw if k not in ("chunk_seconds", "overlap", "batch_size", "device")}
    if unknown:
        raise TypeError(f"separate_file() got unexpected arguments {sorted(unknown)}; it accepts "
                        "chunk_seconds, overlap, batch_size, device")
    path = Path(path)
    header = info(path)
    _, _, sources = _model_format(model)
    stems = tuple(sources if stems is None else ([stems] if isinstance(stems, str) else stems))
    missing = [s for s in stems if s not in sources]
    if missing or not stems:
        raise LabkitError(f"stems={stems!r}: the model separates {', '.join(sources)}; pick from "
                          "those")
    name = path.stem
    folder = Path(out_dir if out_dir is not None else path.parent) / f"{name}_separated"
    targets = {s: folder / f"{name}_{s}.wav" for s in stems}
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    temporaries: dict[str, Path] = {}
    writers: dict[str, Any] = {}
    try:
        for stem, target in targets.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
            os.close(fd)
            temporaries[stem] = Path(tmp)
            writers[stem] = sf.SoundFile(tmp, "w", samplerate=header.sample_rate,
                                         channels=header.channels, format="WAV", subtype="FLOAT")
        keep = [sources.index(s) for s in stems]
        written = 0
        with _open(path) as reader, _inference(
                model, _resolve_device(model, kw.get("device"))) as dev:
            blocks = _read_blocks(reader, path, max(1, round(_BLOCK_SECONDS * header.sample_rate)))
            for piece in _pipeline(model, blocks, header.sample_rate, header.channels, keep,
                                   kw.get("chunk_seconds"), kw.get("overlap", 0.25),
                                   kw.get("batch_size", 1), dev, progress, header.frames):
                piece = piece[..., :max(0, header.frames - written)]
                for i, stem in enumerate(stems):
                    writers[stem].write(np.ascontiguousarray(piece[i].T))
                written += piece.shape[-1]
            if written < header.frames:  # the resampler's rounding: keep the input's length
                for stem in stems:
                    writers[stem].write(np.zeros((header.frames - written, header.channels),
                                                 np.float32))
        for writer in writers.values():
            writer.close()
        for stem, target in targets.items():
            os.chmod(temporaries[stem], 0o644)  # mkstemp makes files private
            os.replace(temporaries[stem], target)
    except BaseException as err:
        for writer in writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never remove files this call did not write
        if hasattr(err, "add_note"):
            err.add_note(f"separate_file('{path}') stopped; no output was written "
                         "(partial files removed)")
        raise
    return targets
