"""Waveform U-Nets for four-stem separation (notebook 03): a masking 1D U-Net and Wave-U-Net.

Both map a mixture waveform ``(batch, channels, samples)`` to the four stems ``(batch, 4,
channels, samples)`` (vocals, drums, bass, other) and follow labkit's separation protocol
(:class:`labkit.separate.Separator`: ``sample_rate``, ``channels``, ``sources``,
``chunk_seconds``, ``valid_length``), so :func:`labkit.separate.separate` runs them on songs of
any length, rate and channel count.

:class:`WaveUNet` (registered as ``"wave_unet"``), the course's model:

- a **learned filterbank** in front: a strided ``Conv1d(1, n_filters, filter_length, stride)``
  applied to each channel (Conv-TasNet and Demucs start the same way). With
  ``filterbank_init="stft"`` its filters start as a Hann-windowed Fourier basis (cosines and
  sines), so training starts from an STFT and moves away from it only where that helps;
  ``filter_length = stride = n_filters = 1`` removes it (the U-Net then sees raw samples);
- a **1D U-Net** over the filterbank frames: ``depth`` encoder levels of ``Conv1d`` with
  downsampling by 2, a bottleneck, ``ConvTranspose1d`` decoder levels, each concatenated with the
  encoder output of the same resolution (the skip connection; lengths are aligned by cropping or
  padding, see :func:`match_length`, so odd lengths work);
- **sigmoid masks** ``(batch, sources, channels, bins, frames)``, one per source, channel, filter
  pair and frame (the cosine and sine filters of one frequency share a mask, so a mask scales
  that frequency's magnitude and keeps its phase), multiplied onto the mixture's filterbank
  coefficients (:func:`apply_masks`);
- the mirrored ``ConvTranspose1d(n_filters, 1, filter_length, stride)`` synthesis, back to
  samples. Without a filterbank the masks are ``(batch, sources, channels, samples)`` on the
  waveform itself.

:class:`StollerWaveUNet` (registered as ``"wave_unet_stoller"``) is the Wave-U-Net of Stoller
et al. (2018) for comparison: valid (unpadded) convolutions whose skips are centre-cropped,
downsampling by decimation, upsampling by linear interpolation, no masks: it outputs three
sources directly and the last source is the mixture minus the others. Its output is shorter
than its input (the context that valid convolutions eat), so its ``forward`` pads the input by
that context.

:func:`describe` prints the shape at every level and the valid input lengths of either model.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from labkit.errors import LabkitError
from labkit.models import register_model

__all__ = [
    "STEMS", "DownBlock", "ScaledConvTranspose1d", "StollerWaveUNet", "UpBlock", "WaveUNet",
    "apply_masks", "centre_crop", "describe", "filter_bins", "match_length", "stft_filterbank",
]

STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
"""The four stems, in labkit's order."""

Recorder = Callable[[str, Tensor], None] | None


# ----------------------------------------------------------------------------------- helpers
def match_length(x: Tensor, length: int) -> Tensor:
    """Crop or zero-pad the last axis of ``x`` ``(..., n)`` to ``length`` (at the end).

    The skip alignment of a U-Net with padded convolutions: a stride-2 level maps ``n`` samples
    to ``ceil(n / 2)``, the transposed convolution back to ``2 ceil(n / 2)``, one more than ``n``
    when ``n`` is odd; the extra sample is at the end, so cropping (or padding) there lines the
    decoder up with the encoder. Returns ``(..., length)``.
    """
    n = x.shape[-1]
    if n > length:
        return x[..., :length]
    if n < length:
        return F.pad(x, (0, length - n))
    return x


def centre_crop(x: Tensor, length: int) -> Tensor:
    """The middle ``length`` samples of ``x`` ``(..., n)`` (``n >= length``): ``(..., length)``.

    The skip alignment of Wave-U-Net: valid convolutions shorten a signal at both ends, so the
    encoder output is longer than the decoder's and the two line up in the middle. When ``n -
    length`` is odd the extra sample is dropped at the end.
    """
    n = x.shape[-1]
    if n < length:
        raise LabkitError(f"centre_crop: the input has {n} samples, fewer than the {length} "
                          "asked for")
    start = (n - length) // 2
    return x[..., start:start + length]


def apply_masks(mixture: Tensor, masks: Tensor) -> Tensor:
    """Multiply each source's mask onto the mixture: the masked estimates.

    ``mixture``: ``(batch, channels, ..., n)``; ``masks``: ``(batch, sources, n')`` (one mask per
    source shared by every channel) or ``(batch, sources, channels, ..., n')`` (one per channel).
    Both are cropped to the shorter length ``min(n, n')`` first. Returns ``(batch, sources,
    channels, ..., min(n, n'))``.
    """
    length = min(mixture.shape[-1], masks.shape[-1])
    mixture = mixture[..., :length]
    masks = masks[..., :length]
    if masks.ndim == 3:
        masks = masks.reshape(masks.shape[0], masks.shape[1], *([1] * (mixture.ndim - 2)), length)
    return masks * mixture.unsqueeze(1)


def filter_bins(n_filters: int) -> Tensor:
    """The frequency bin of each of ``n_filters`` filters in :func:`stft_filterbank`'s layout:
    ``[0, 1, ..., n_filters // 2, 1, 2, ..., (n_filters - 1) // 2]`` (the cosines of bins
    ``0 .. n_filters // 2``, then the sines of bins ``1 .. (n_filters - 1) // 2``). A long tensor
    ``(n_filters,)``; there are ``n_filters // 2 + 1`` bins."""
    return torch.cat([torch.arange(n_filters // 2 + 1), torch.arange(1, (n_filters + 1) // 2)])


def stft_filterbank(filter_length: int, n_filters: int | None = None,
                    stride: int | None = None) -> tuple[Tensor, Tensor]:
    """Analysis and synthesis filters of a Hann-windowed real STFT, as conv weights.

    The analysis filters ``(n_filters, 1, filter_length)`` are the Hann-windowed cosines of bins
    ``0 .. n_filters // 2`` of a ``filter_length``-point DFT, followed by the sines of bins
    ``1 .. (n_filters - 1) // 2`` (see :func:`filter_bins`). With ``n_filters = filter_length``
    (the default) that is every bin, a complete basis; fewer filters keep the lowest bins. The
    synthesis filters (same shape, for ``ConvTranspose1d`` with hop ``stride``, default
    ``filter_length // 4``) use the dual window ``w / sum_m w(n + m stride)^2``, so that
    ``synthesis(analysis(x)) == x`` away from the edges for any ``stride <= filter_length`` when
    every bin is kept. Returns ``(analysis, synthesis)``.
    """
    n = int(filter_length)
    n_filters = n if n_filters is None else int(n_filters)
    stride = max(1, n // 4) if stride is None else int(stride)
    if not 1 <= n_filters <= n or not 1 <= stride <= n:
        raise LabkitError(f"stft_filterbank: n_filters={n_filters}, stride={stride}; both must "
                          f"lie in [1, filter_length={n}]")
    t = torch.arange(n, dtype=torch.float64)
    # Without overlap a Hann window would silence the frame edges for good: use a flat one.
    window = (torch.hann_window(n, periodic=True, dtype=torch.float64) if stride < n
              else torch.ones(n, dtype=torch.float64))
    rows, weights = [], []
    for index, k in enumerate(filter_bins(n_filters).tolist()):
        sine = index > n_filters // 2
        rows.append((torch.sin if sine else torch.cos)(2 * math.pi * k * t / n))
        # the real inverse DFT counts bins 0 and n/2 once and every other bin twice
        weights.append(1.0 if 2 * k in (0, n) else 2.0)
    basis = torch.stack(rows)
    weight = torch.tensor(weights, dtype=torch.float64)[:, None]
    # Frames overlap-add at hop `stride`: dividing by the summed squared windows (a function of
    # n mod stride) makes analysis followed by synthesis the identity.
    squares = window ** 2
    overlap = torch.zeros(n, dtype=torch.float64)
    for m in range(-(n // stride) - 1, n // stride + 2):
        index = t.long() + m * stride
        inside = (index >= 0) & (index < n)
        overlap[inside] += squares[index[inside]]
    dual = window / overlap.clamp_min(1e-12)
    analysis = basis * window
    synthesis = basis * weight * dual / n
    return analysis.float().unsqueeze(1), synthesis.float().unsqueeze(1)


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise LabkitError(f"norm={kind!r}; use None, 'batch' or 'group'")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LabkitError(f"{name}={value!r}; expected a whole number >= {minimum}")
    return value


def _check_waveform(x: Tensor, channels: int, who: str) -> None:
    if not isinstance(x, Tensor):
        raise LabkitError(f"{who} expects a torch tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[1] != channels:
        raise LabkitError(f"{who} input has shape {tuple(x.shape)}; expected (batch, {channels}, "
                          "samples)")


# ----------------------------------------------------------------------------------- blocks
class DownBlock(nn.Module):
    """One encoder level: a convolution, then a strided convolution that halves the length.

    ``(batch, in_channels, n)`` -> ``(skip (batch, out_channels, n), down (batch, out_channels,
    ceil(n / 2)))``: ``Conv1d(kernel_size, padding "same") -> norm -> GELU`` gives the skip
    connection, then ``Conv1d(kernel 4, stride 2, padding 1) -> norm -> GELU`` (for odd ``n`` one
    zero is padded at the end first) downsamples it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5,
                 norm: str | None = "batch") -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = _norm(norm, out_channels)
        self.down = nn.Conv1d(out_channels, out_channels, 4, stride=2, padding=1)
        self.down_norm = _norm(norm, out_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(skip, downsampled)``, see the class docstring."""
        skip = F.gelu(self.norm(self.conv(x)))
        padded = F.pad(skip, (0, skip.shape[-1] % 2))
        return skip, F.gelu(self.down_norm(self.down(padded)))


class UpBlock(nn.Module):
    """One decoder level: double the length, align with the skip, concatenate, convolve.

    ``x (batch, in_channels, m)`` and ``skip (batch, skip_channels, n)`` -> ``(batch,
    out_channels, n)``: ``ConvTranspose1d(kernel 4, stride 2, padding 1)`` gives ``2 m`` samples,
    :func:`match_length` crops or pads them to ``n``, the skip is concatenated along the channels
    and ``Conv1d(kernel_size, "same") -> norm -> GELU`` mixes them.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 kernel_size: int = 5, norm: str | None = "batch") -> None:
        super().__init__()
        self.up = nn.ConvTranspose1d(in_channels, out_channels, 4, stride=2, padding=1)
        self.up_norm = _norm(norm, out_channels)
        self.conv = nn.Conv1d(out_channels + skip_channels, out_channels, kernel_size,
                              padding=kernel_size // 2)
        self.norm = _norm(norm, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """The merged level ``(batch, out_channels, skip.shape[-1])``."""
        up = F.gelu(self.up_norm(self.up(x)))
        up = match_length(up, skip.shape[-1])
        return F.gelu(self.norm(self.conv(torch.cat([up, skip], dim=1))))


class ScaledConvTranspose1d(nn.Module):
    """``ConvTranspose1d`` (no bias) whose output is multiplied by a fixed ``gain``.

    Adam moves every weight by about the learning rate per step, whatever the weight's size. The
    inverse STFT filters are about ``1 / filter_length`` the size of the analysis filters, so
    stored as they are they would be rewritten within a few steps; stored ``1 / gain`` times
    larger (``weight = filters / gain``), they move as slowly as the analysis filters.
    ``(batch, in_channels, frames)`` -> ``(batch, out_channels, samples)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 gain: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride,
                                       bias=False)
        self.gain = float(gain)

    def forward(self, x: Tensor) -> Tensor:
        """``gain * conv_transpose1d(x)``."""
        return self.conv(x) * self.gain


# ----------------------------------------------------------------------------------- WaveUNet
@register_model("wave_unet")
class WaveUNet(nn.Module):
    """Masking 1D U-Net over a learned filterbank (see the module docstring).

    Arguments:
        sources: stem names, in output order. channels: 1 (mono) or 2 (stereo) input channels.
        sample_rate: the rate the model works at (:func:`labkit.separate.separate` resamples).
        filter_length, stride, n_filters: the filterbank (``Conv1d(1, n_filters, filter_length,
            stride)`` per channel); ``filter_length = stride = n_filters = 1`` means none.
        filterbank_init: ``"stft"`` (a Hann-windowed Fourier basis and its inverse) or
            ``"random"`` (PyTorch's default initialisation, as in Conv-TasNet).
        depth: U-Net levels (each halves the frame rate); width: channels of the first level;
            growth: channel multiplier per level; kernel_size: of the U-Net's convolutions.
        norm: ``"batch"``, ``"group"`` or None. chunk_seconds: the chunk length
            :func:`labkit.separate.separate` uses.

    ``forward(mixture (batch, channels, samples))`` -> ``(batch, sources, channels, samples)``;
    :meth:`masks` gives the masks and the mixture's filterbank coefficients.
    """

    def __init__(self, sources: Sequence[str] = STEMS, channels: int = 2,
                 sample_rate: int = 22050, filter_length: int = 512, stride: int = 256,
                 n_filters: int = 512, filterbank_init: str = "stft", depth: int = 4,
                 width: int = 64, growth: float = 1.5, kernel_size: int = 5,
                 norm: str | None = "batch", chunk_seconds: float = 8.0) -> None:
        super().__init__()
        self.sources = tuple(str(s) for s in sources)
        if not self.sources:
            raise LabkitError("WaveUNet: sources is empty; give stem names, e.g. "
                              f"{STEMS}")
        if channels not in (1, 2):
            raise LabkitError(f"WaveUNet: channels={channels!r}; expected 1 (mono) or 2 "
                              "(stereo)")
        self.channels = int(channels)
        self.sample_rate = _positive_int("WaveUNet: sample_rate", sample_rate)
        self.filter_length = _positive_int("WaveUNet: filter_length", filter_length)
        self.stride = _positive_int("WaveUNet: stride", stride)
        self.n_filters = _positive_int("WaveUNet: n_filters", n_filters)
        if self.stride > self.filter_length:
            raise LabkitError(f"WaveUNet: stride={stride} is longer than filter_length="
                              f"{filter_length}; samples between filters would be lost")
        if filterbank_init not in ("stft", "random"):
            raise LabkitError(f"WaveUNet: filterbank_init={filterbank_init!r}; use 'stft' or "
                              "'random'")
        self.depth = _positive_int("WaveUNet: depth", depth, 0)
        _positive_int("WaveUNet: width", width)
        _positive_int("WaveUNet: kernel_size", kernel_size)
        if not growth >= 1:
            raise LabkitError(f"WaveUNet: growth={growth!r}; expected a number >= 1")
        if not chunk_seconds > 0:
            raise LabkitError(f"WaveUNet: chunk_seconds={chunk_seconds!r}; expected > 0")
        self.chunk_seconds = float(chunk_seconds)
        self.has_filterbank = not (filter_length == stride == n_filters == 1)

        if self.has_filterbank:
            analysis, synthesis = stft_filterbank(filter_length, n_filters, stride)
            self.analysis = nn.Conv1d(1, n_filters, filter_length, stride=stride, bias=False)
            self.synthesis = ScaledConvTranspose1d(n_filters, 1, filter_length, stride,
                                                   gain=float(synthesis.norm() / analysis.norm()))
            if filterbank_init == "stft":
                with torch.no_grad():
                    self.analysis.weight.copy_(analysis)
                    self.synthesis.conv.weight.copy_(synthesis / self.synthesis.gain)
        # Filters come in pairs (the cosine and sine of one frequency at STFT initialisation):
        # the network sees each pair's energy and gives both one mask, which scales that
        # frequency's magnitude and keeps its phase.
        self.register_buffer("filter_bins", filter_bins(self.n_filters), persistent=False)
        self.bins = self.n_filters // 2 + 1
        features = self.channels * self.bins
        widths = [round(width * growth ** i) for i in range(self.depth + 1)]
        self.input_norm = nn.BatchNorm1d(features) if norm == "batch" else _norm(norm, features)
        self.inlet = nn.Conv1d(features, widths[0], 1)
        self.encoder = nn.ModuleList(
            DownBlock(widths[i], widths[i + 1], kernel_size, norm) for i in range(self.depth))
        self.bottleneck = nn.Sequential(
            nn.Conv1d(widths[-1], widths[-1], kernel_size, padding=kernel_size // 2),
            _norm(norm, widths[-1]), nn.GELU())
        self.decoder = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i + 1], widths[i], kernel_size, norm)
            for i in reversed(range(self.depth)))
        self.outlet = nn.Conv1d(widths[0], len(self.sources) * features, 1)
        # Start from an even split: every mask near 1 / sources, so that the estimates add up to
        # about the mixture from the first step (sigmoid(0) = 0.5 would double it for 4 stems).
        nn.init.constant_(self.outlet.bias, -math.log(max(len(self.sources) - 1, 1)))

    # -- lengths -------------------------------------------------------------------------
    @property
    def context(self) -> int:
        """Zeros put before the input (``filter_length - stride``) so that its first sample, like
        every other, lies under as many filterbank frames as any sample in the middle."""
        return self.filter_length - self.stride

    def frames(self, samples: int) -> int:
        """Filterbank frames the model uses for an input of ``samples`` samples (a multiple of
        ``2 ** depth`` that covers the input and the context)."""
        multiple = 2 ** self.depth
        frames = max(1, math.ceil((self.context + samples) / self.stride))
        return math.ceil(frames / multiple) * multiple

    def valid_length(self, samples: int) -> int:
        """The longest input with as many frames as ``samples`` (>= ``samples``): lengths
        between are padded with zeros up to it, so asking for it wastes no computation."""
        return self.frames(samples) * self.stride - self.context

    def _padding(self, samples: int) -> tuple[int, int]:
        """Zeros ``(before, after)`` an input of ``samples`` samples."""
        frames = self.frames(samples)
        total = (frames - 1) * self.stride + self.filter_length
        return self.context, total - self.context - samples

    # -- the network ---------------------------------------------------------------------
    def encode(self, mixture: Tensor) -> Tensor:
        """Filterbank coefficients ``(batch, channels, n_filters, frames)`` of ``(batch,
        channels, samples)`` (the waveform itself, ``n_filters = 1``, without a filterbank)."""
        batch, channels, samples = mixture.shape
        if not self.has_filterbank:
            return mixture.unsqueeze(2)
        coefficients = self.analysis(mixture.reshape(batch * channels, 1, samples))
        return coefficients.reshape(batch, channels, self.n_filters, -1)

    def decode(self, coefficients: Tensor, samples: int) -> Tensor:
        """Waveforms ``(..., samples)`` from coefficients ``(..., n_filters, frames)``."""
        lead = coefficients.shape[:-2]
        if not self.has_filterbank:
            return match_length(coefficients.reshape(*lead, coefficients.shape[-1]), samples)
        flat = coefficients.reshape(-1, self.n_filters, coefficients.shape[-1])
        waveforms = self.synthesis(flat).squeeze(1)
        return match_length(waveforms, samples).reshape(*lead, samples)

    def _unet(self, features: Tensor, record: Recorder = None) -> Tensor:
        """Mask logits ``(batch, sources * channels * bins, frames)``."""
        x = self.inlet(self.input_norm(features))
        _record(record, "inlet", x)
        skips = []
        for i, block in enumerate(self.encoder):
            skip, x = block(x)
            skips.append(skip)
            _record(record, f"encoder {i + 1}", x)
        x = self.bottleneck(x)
        _record(record, "bottleneck", x)
        for i, (block, skip) in enumerate(zip(self.decoder, reversed(skips))):
            x = block(x, skip)
            _record(record, f"decoder {self.depth - i}", x)
        return self.outlet(x)

    def energies(self, coefficients: Tensor) -> Tensor:
        """Each filter pair's energy ``(..., bins, frames)`` (cosine^2 + sine^2 at STFT
        initialisation: the power spectrogram) from coefficients ``(..., n_filters, frames)``.

        At least float32: under CUDA autocast the coefficients are float16, whose squares
        overflow above 65504 (a loud bin) and which ``index_add_`` would not mix with float32."""
        power = coefficients.to(torch.promote_types(coefficients.dtype, torch.float32)) ** 2
        shape = (*power.shape[:-2], self.bins, power.shape[-1])
        return power.new_zeros(shape).index_add_(-2, self.filter_bins, power)

    def masks(self, mixture: Tensor, record: Recorder = None) -> tuple[Tensor, Tensor]:
        """``(masks, coefficients)`` for a mixture ``(batch, channels, samples)``: masks in [0, 1]
        ``(batch, sources, channels, bins, frames)`` (``bins = n_filters // 2 + 1``, one per filter
        pair) and the filterbank coefficients ``(batch, channels, n_filters, frames)`` of the
        mixture padded as in :meth:`forward` (``frames = self.frames(samples)``)."""
        _check_waveform(mixture, self.channels, "WaveUNet")
        padded = F.pad(mixture, self._padding(mixture.shape[-1]))
        _record(record, "input (padded)", padded)
        coefficients = self.encode(padded)
        _record(record, "filterbank", coefficients)
        batch, channels, _, frames = coefficients.shape
        # log1p compresses the energies' wide range (quiet and loud songs alike) for the network;
        # the masks multiply the coefficients themselves.
        features = torch.log1p(self.energies(coefficients)).reshape(batch, -1, frames)
        logits = self._unet(features, record)
        masks = torch.sigmoid(logits).reshape(batch, len(self.sources), channels, self.bins,
                                              frames)
        _record(record, "masks", masks)
        return masks, coefficients

    def forward(self, mixture: Tensor, record: Recorder = None) -> Tensor:
        """Stems ``(batch, sources, channels, samples)`` of a mixture ``(batch, channels,
        samples)`` of any length."""
        masks, coefficients = self.masks(mixture, record)
        before = self.context
        samples = mixture.shape[-1]
        per_filter = masks.index_select(-2, self.filter_bins)  # both filters of a pair
        stems = self.decode(apply_masks(coefficients, per_filter), before + samples)[..., before:]
        _record(record, "output", stems)
        return stems


def _record(record: Recorder, name: str, x: Tensor) -> None:
    if record is not None:
        record(name, x)


# ----------------------------------------------------------------------------------- Stoller
@register_model("wave_unet_stoller")
class StollerWaveUNet(nn.Module):
    """Wave-U-Net (Stoller, Ewert and Dixon, 2018) with the difference output layer.

    Arguments: ``levels`` (paper: 12), ``filters`` added per level (paper: 24; level ``i`` has
    ``filters * (i + 1)`` channels), ``down_kernel`` (15) and ``up_kernel`` (5), the sizes of the
    valid convolutions; ``sources``, ``channels``, ``sample_rate``, ``chunk_seconds`` as in
    :class:`WaveUNet`.

    Encoder level: valid ``Conv1d(down_kernel)`` + LeakyReLU (kept as the skip), then decimation
    (every other sample). Decoder level: linear interpolation to ``2 m - 1`` samples, the
    centre-cropped skip concatenated, valid ``Conv1d(up_kernel)`` + LeakyReLU. The input,
    centre-cropped, joins the last level; a ``1x1`` convolution with tanh gives all sources but
    the last, which is the cropped mixture minus their sum.

    :meth:`output_length` maps an input length to the output length (valid convolutions eat
    context at both ends); :meth:`forward` pads its input by that context so that the stems are as
    long as the mixture.
    """

    def __init__(self, sources: Sequence[str] = STEMS, channels: int = 2,
                 sample_rate: int = 22050, levels: int = 6, filters: int = 16,
                 down_kernel: int = 15, up_kernel: int = 5, chunk_seconds: float = 8.0) -> None:
        super().__init__()
        self.sources = tuple(str(s) for s in sources)
        if len(self.sources) < 2:
            raise LabkitError(f"StollerWaveUNet: sources={sources!r}; the difference output "
                              "needs at least two sources")
        if channels not in (1, 2):
            raise LabkitError(f"StollerWaveUNet: channels={channels!r}; expected 1 or 2")
        self.channels = int(channels)
        self.sample_rate = _positive_int("StollerWaveUNet: sample_rate", sample_rate)
        self.levels = _positive_int("StollerWaveUNet: levels", levels)
        _positive_int("StollerWaveUNet: filters", filters)
        for name, k in (("down_kernel", down_kernel), ("up_kernel", up_kernel)):
            if _positive_int(f"StollerWaveUNet: {name}", k) % 2 == 0:
                raise LabkitError(f"StollerWaveUNet: {name}={k}; use an odd size so that "
                                  "centre crops line up")
        if not chunk_seconds > 0:
            raise LabkitError(f"StollerWaveUNet: chunk_seconds={chunk_seconds!r}; expected > 0")
        self.down_kernel, self.up_kernel = down_kernel, up_kernel
        self.chunk_seconds = float(chunk_seconds)
        widths = [filters * (i + 1) for i in range(levels + 1)]
        self.down = nn.ModuleList(
            nn.Conv1d(c_in, c_out, down_kernel)
            for c_in, c_out in zip([channels, *widths[:levels - 1]], widths[:levels]))
        self.bottom = nn.Conv1d(widths[levels - 1], widths[levels], down_kernel)
        self.up = nn.ModuleList(
            nn.Conv1d(widths[i + 1] + widths[i], widths[i], up_kernel)
            for i in reversed(range(levels)))
        self.out = nn.Conv1d(widths[0] + channels, (len(self.sources) - 1) * channels, 1)

    # -- lengths -------------------------------------------------------------------------
    def _lengths(self, samples: int) -> list[tuple[str, int]]:
        """(name, length) at every stage for an input of ``samples`` (may go below 1)."""
        stages = [("input", samples)]
        n = samples
        skips = []
        for i in range(self.levels):
            n = n - self.down_kernel + 1
            skips.append(n)
            stages.append((f"encoder {i + 1} (conv)", n))
            n = (n + 1) // 2
            stages.append((f"encoder {i + 1} (decimated)", n))
        n = n - self.down_kernel + 1
        stages.append(("bottleneck", n))
        for i in reversed(range(self.levels)):
            n = 2 * n - 1
            if n > skips[i]:
                n = -1  # the skip is too short to crop: an invalid length
            n = n - self.up_kernel + 1
            stages.append((f"decoder {i + 1}", n))
        stages.append(("output", n))
        return stages

    def output_length(self, samples: int) -> int:
        """Output samples for ``samples`` input samples (< 1: too short for the network)."""
        lengths = [n for _, n in self._lengths(samples)]
        return lengths[-1] if min(lengths) >= 1 else 0

    def input_length(self, output: int) -> int:
        """The shortest input length whose output has at least ``output`` samples."""
        # output_length never decreases with the input length: double, then bisect
        high = 1
        while self.output_length(high) < max(output, 1):
            high *= 2
        low = high // 2 + 1 if high > 1 else 1
        while low < high:
            middle = (low + high) // 2
            if self.output_length(middle) >= max(output, 1):
                high = middle
            else:
                low = middle + 1
        return high

    def context(self, samples: int) -> tuple[int, int, int]:
        """``(input, left, right)``: the input length for ``samples`` output samples and the
        padding on each side of a ``samples``-long mixture that makes it."""
        needed = self.input_length(samples)
        out = self.output_length(needed)
        extra = needed - out  # what the valid convolutions eat, split evenly
        left = extra // 2
        return needed, left, needed - samples - left

    def valid_length(self, samples: int) -> int:
        """The shortest output length ``>= samples`` the network produces exactly."""
        return self.output_length(self.input_length(samples))

    # -- the network ---------------------------------------------------------------------
    def core(self, x: Tensor, record: Recorder = None) -> Tensor:
        """The network without padding: ``(batch, channels, n)`` -> ``(batch, sources,
        channels, output_length(n))``."""
        skips = []
        h = x
        for i, conv in enumerate(self.down):
            h = F.leaky_relu(conv(h), 0.2)
            skips.append(h)
            h = h[..., ::2]
            _record(record, f"encoder {i + 1}", h)
        h = F.leaky_relu(self.bottom(h), 0.2)
        _record(record, "bottleneck", h)
        for conv, skip, level in zip(self.up, reversed(skips), range(self.levels, 0, -1)):
            h = F.interpolate(h, size=2 * h.shape[-1] - 1, mode="linear", align_corners=True)
            h = F.leaky_relu(conv(torch.cat([h, centre_crop(skip, h.shape[-1])], dim=1)), 0.2)
            _record(record, f"decoder {level}", h)
        mixture = centre_crop(x, h.shape[-1])
        direct = torch.tanh(self.out(torch.cat([h, mixture], dim=1)))
        batch, _, n = direct.shape
        direct = direct.reshape(batch, len(self.sources) - 1, self.channels, n)
        last = mixture - direct.sum(dim=1)
        return torch.cat([direct, last.unsqueeze(1)], dim=1)

    def forward(self, mixture: Tensor, record: Recorder = None) -> Tensor:
        """Stems ``(batch, sources, channels, samples)`` of ``(batch, channels, samples)``:
        the mixture is zero-padded by the context the valid convolutions need."""
        _check_waveform(mixture, self.channels, "StollerWaveUNet")
        samples = mixture.shape[-1]
        _, left, right = self.context(samples)
        padded = F.pad(mixture, (left, right))
        _record(record, "input (padded)", padded)
        stems = self.core(padded, record)[..., :samples]
        _record(record, "output", stems)
        return stems


# ----------------------------------------------------------------------------------- describe
def describe(model: nn.Module, samples: int, print_fn: Callable[[str], Any] | None = print
             ) -> list[tuple[str, tuple[int, ...]]]:
    """Print (and return) the shape at every level of ``model`` for a ``samples``-long input.

    Works for :class:`WaveUNet` and :class:`StollerWaveUNet`: runs one mono or stereo batch of
    zeros through the model in eval mode and lists ``(name, shape)`` per stage, then the valid
    input lengths around ``samples`` (lengths the network uses without padding). ``print_fn=None``
    prints nothing.
    """
    rows: list[tuple[str, tuple[int, ...]]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.channels, samples),
                  record=lambda name, x: rows.append((name, tuple(x.shape))))
    finally:
        model.train(was_training)
    if print_fn is not None:
        width = max(len(name) for name, _ in rows)
        for name, shape in rows:
            print_fn(f"{name:<{width}}  {shape}")
        valid = model.valid_length(samples)
        if isinstance(model, StollerWaveUNet):
            needed, left, _ = model.context(samples)
            print_fn(f"valid output lengths near {samples}: {valid} "
                     f"(next {model.valid_length(valid + 1)}); an input of {needed} samples "
                     f"gives {model.output_length(needed)} (context: {left} before, "
                     f"{needed - model.output_length(needed) - left} after)")
        else:
            print_fn(f"valid input lengths near {samples}: {valid} (next "
                     f"{model.valid_length(valid + 1)}); other lengths are zero-padded to "
                     "the next one")
    return rows
