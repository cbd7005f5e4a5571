"""The spectrogram U-Net of Jansson et al. (2017) for singing-voice separation, and its wrapper.

:class:`SpecUNet` maps a mixture magnitude spectrogram to a soft mask in [0, 1] of the same shape;
the vocals estimate is ``mask * mixture``. Its defaults are the structure of the practical that
notebook 02 follows:

- input: a mixture magnitude ``(batch, 513, 128)`` (1024-point STFT, 128 frames); the channel
  axis the convolutions need is added inside;
- encoder: ``levels = 4`` blocks of ``Conv2d`` (stride 2) + LeakyReLU, channels 1 -> 32 -> 64 ->
  128 -> 256;
- decoder: ``ConvTranspose2d`` (stride 2) + LeakyReLU, each followed by concatenation with the
  encoder output of the same resolution (the skip connection);
- last layer: ``ConvTranspose2d`` + sigmoid -> the mask.

Built exactly like this, with no normalisation, the mask collapses to zero within a few dozen
steps of training (notebook 02 shows it). ``norm="batch"`` puts batch normalisation after every
convolution except the last, as the paper does, and that makes it train. The paper's network
is ``SpecUNet.paper()``: 6 levels, 16 -> 512 channels, 5x5 kernels, batch norm, 50 % dropout in the
first three decoder layers. ``log_input=True`` feeds ``log(1 + magnitude)`` to the network (the
mask still multiplies the linear magnitude): the working recipe of notebook 02 uses it.

Any number of bins and frames works: the input is zero-padded up to a multiple of
``2 ** levels`` and the mask is cropped back.

:class:`SpecUNetSeparator` wraps a SpecUNet into labkit's separation protocol
(:class:`labkit.separate.Separator`): waveform ``(batch, channels, samples)`` in, ``(batch, 2,
channels, samples)`` out (vocals, accompaniment), by STFT, mask, and inverse STFT with the
mixture's phase.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from labkit.errors import LabkitError
from labkit.models import build_model, model_config, register_model

__all__ = ["SpecUNet", "SpecUNetSeparator", "apply_mask", "masked_l1_loss"]

NORMS = (None, "batch")


def _same_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 conv halve and its transpose double a size.

    Conv: ``out = floor((n + 2p - k) / 2) + 1 = n / 2`` for even ``n`` with ``p = (k - 1) // 2``.
    Transpose: ``out = 2 (n - 1) - 2p + k + op = 2n`` gives ``op = 2 + 2p - k`` (1 for odd k,
    0 for even k).
    """
    padding = (kernel_size - 1) // 2
    return padding, 2 + 2 * padding - kernel_size


def _check_input(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``x`` as ``(batch * channels, 1, bins, frames)``, and the shape to give the mask back."""
    if not isinstance(x, Tensor):
        raise LabkitError(f"SpecUNet expects a torch tensor, got {type(x).__name__}")
    if x.ndim == 3:
        return x.unsqueeze(1), tuple(x.shape)
    if x.ndim == 4:
        return x.reshape(-1, 1, *x.shape[-2:]), tuple(x.shape)
    raise LabkitError(f"SpecUNet input has shape {tuple(x.shape)}; expected a magnitude "
                      "spectrogram (batch, bins, frames) or (batch, channels, bins, frames)")


class EncoderBlock(nn.Module):
    """Conv2d with stride 2 (halves bins and frames), optional batch norm, LeakyReLU.

    ``(batch, in_channels, bins, frames)`` -> ``(batch, out_channels, bins / 2, frames / 2)``
    (bins and frames even).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5,
                 norm: str | None = None, negative_slope: float = 0.2) -> None:
        super().__init__()
        padding, _ = _same_padding(kernel_size)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=2, padding=padding,
                              bias=norm is None)
        self.norm = nn.BatchNorm2d(out_channels) if norm == "batch" else nn.Identity()
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, in_channels, bins, frames)`` -> ``(batch, out_channels, bins/2, frames/2)``."""
        return self.act(self.norm(self.conv(x)))


class DecoderBlock(nn.Module):
    """ConvTranspose2d with stride 2 (doubles bins and frames), optional batch norm, LeakyReLU,
    optional dropout, then concatenation with the skip connection.

    ``x`` ``(batch, in_channels, bins, frames)`` and ``skip`` ``(batch, skip_channels, 2 bins,
    2 frames)`` -> ``(batch, out_channels + skip_channels, 2 bins, 2 frames)``; without a skip
    ``(batch, out_channels, 2 bins, 2 frames)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5,
                 norm: str | None = None, dropout: float = 0.0,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        padding, output_padding = _same_padding(kernel_size)
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=2,
                                         padding=padding, output_padding=output_padding,
                                         bias=norm is None)
        self.norm = nn.BatchNorm2d(out_channels) if norm == "batch" else nn.Identity()
        self.act = nn.LeakyReLU(negative_slope)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """Upsample ``x`` and concatenate ``skip`` along the channels (see the class)."""
        y = self.dropout(self.act(self.norm(self.deconv(x))))
        return y if skip is None else torch.cat([y, skip], dim=1)


@register_model("spec_unet")
class SpecUNet(nn.Module):
    """The spectrogram U-Net: mixture magnitude in, mask in [0, 1] of the same shape out.

    Arguments:
        levels: encoder blocks (= decoder blocks); the practical uses 4, the paper 6.
        base_channels: channels of the first encoder block; level ``i`` has
            ``base_channels * 2 ** i`` (32 -> 256 for the practical, 16 -> 512 for the paper).
        kernel_size: square kernel of every (transposed) convolution (5 in the paper).
        norm: None (the practical) or ``"batch"`` (batch norm after every convolution but the
            last, the paper's choice, and what makes training work).
        dropout: dropout probability in the first ``dropout_layers`` decoder blocks (paper: 0.5
            in 3).
        log_input: feed ``log(1 + magnitude / log_floor)`` to the network instead of the
            magnitude (``log_floor = 1``: ``log1p``). Magnitudes well below ``log_floor`` all
            look like silence to the network; those above it are compressed like decibels.
        negative_slope: of the LeakyReLUs (0.2 in the paper).

    ``forward(magnitude)``: ``(batch, bins, frames)`` or ``(batch, channels, bins, frames)``,
    non-negative; returns the mask with the input's shape. Each channel is processed on its own.
    """

    def __init__(self, levels: int = 4, base_channels: int = 32, kernel_size: int = 5,
                 norm: str | None = None, dropout: float = 0.0, dropout_layers: int = 3,
                 log_input: bool = False, log_floor: float = 1.0,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise LabkitError(f"SpecUNet: levels={levels!r}; expected a whole number >= 1 (the "
                              "practical uses 4, the paper 6)")
        if isinstance(base_channels, bool) or not isinstance(base_channels, int) \
                or base_channels < 1:
            raise LabkitError(f"SpecUNet: base_channels={base_channels!r}; expected a whole "
                              "number >= 1 (the practical uses 32, the paper 16)")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 2:
            raise LabkitError(f"SpecUNet: kernel_size={kernel_size!r}; expected a whole number "
                              ">= 2 (the paper uses 5)")
        if norm not in NORMS:
            raise LabkitError(f"SpecUNet: norm={norm!r}; use None (no normalisation) or 'batch'")
        if not log_floor > 0:
            raise LabkitError(f"SpecUNet: log_floor={log_floor!r}; expected a positive magnitude")
        if not 0.0 <= dropout < 1.0:
            raise LabkitError(f"SpecUNet: dropout={dropout!r}; expected a probability in [0, 1)")
        self.levels = levels
        self.log_input = bool(log_input)
        self.log_floor = float(log_floor)
        widths = [base_channels * 2 ** i for i in range(levels)]
        self.encoder = nn.ModuleList(
            EncoderBlock(c_in, c_out, kernel_size, norm, negative_slope)
            for c_in, c_out in zip([1, *widths[:-1]], widths))
        # Decoder block j (from the bottom) upsamples to the resolution of encoder level
        # levels-2-j and is concatenated with that level's output: its input is twice as wide,
        # except the first, which takes the bottleneck alone.
        self.decoder = nn.ModuleList()
        for j in range(levels - 1):
            out_channels = widths[levels - 2 - j]
            in_channels = widths[-1] if j == 0 else 2 * widths[levels - 1 - j]
            self.decoder.append(DecoderBlock(in_channels, out_channels, kernel_size, norm,
                                             dropout if j < dropout_layers else 0.0,
                                             negative_slope))
        padding, output_padding = _same_padding(kernel_size)
        last_in = widths[-1] if levels == 1 else 2 * widths[0]
        self.last = nn.ConvTranspose2d(last_in, 1, kernel_size, stride=2, padding=padding,
                                       output_padding=output_padding)

    @classmethod
    def practical(cls, **overrides: Any) -> SpecUNet:
        """The practical's network: 4 levels, 32 -> 256 channels, no normalisation (collapses)."""
        return cls(**{"levels": 4, "base_channels": 32, "norm": None, **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> SpecUNet:
        """Jansson et al. (2017): 6 levels, 16 -> 512 channels, 5x5 kernels, batch norm, 50 %
        dropout in the first three decoder blocks."""
        return cls(**{"levels": 6, "base_channels": 16, "kernel_size": 5, "norm": "batch",
                      "dropout": 0.5, "dropout_layers": 3, **overrides})

    @property
    def multiple(self) -> int:
        """Bins and frames are padded up to a multiple of this (``2 ** levels``)."""
        return 2 ** self.levels

    def forward(self, magnitude: Tensor) -> Tensor:
        """Mask ``(batch[, channels], bins, frames)`` in [0, 1] for a mixture magnitude of that
        shape."""
        x, shape = _check_input(magnitude)
        bins, frames = x.shape[-2:]
        pad_bins = -bins % self.multiple
        pad_frames = -frames % self.multiple
        if self.log_input:
            x = torch.log1p(x.clamp_min(0) / self.log_floor)
        x = F.pad(x, (0, pad_frames, 0, pad_bins))
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        # The bottleneck is the last encoder output; the others are the skip connections.
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(x, skip)
        mask = torch.sigmoid(self.last(x))[..., :bins, :frames]
        return mask.reshape(shape)


def apply_mask(mask: Tensor, mixture: Tensor) -> Tensor:
    """The masked spectrogram ``mask * mixture`` (magnitudes or complex STFTs), any equal shapes,
    e.g. ``(batch, channels, bins, frames)``."""
    return mask * mixture


def masked_l1_loss(mask: Tensor, mixture_magnitude: Tensor, target_magnitude: Tensor) -> Tensor:
    """The practical's loss ``mean |mask * X - Y|`` on magnitudes (a scalar tensor).

    All three have one shape, e.g. ``(batch, bins, frames)`` or ``(batch, channels, bins,
    frames)``. The mean (not the sum) keeps the scale independent of the patch size.
    """
    if not (mask.shape == mixture_magnitude.shape == target_magnitude.shape):
        raise LabkitError(f"masked_l1_loss: mask {tuple(mask.shape)}, mixture "
                          f"{tuple(mixture_magnitude.shape)} and target "
                          f"{tuple(target_magnitude.shape)} must have one shape")
    return (apply_mask(mask, mixture_magnitude) - target_magnitude).abs().mean()


@register_model("spec_unet_separator")
class SpecUNetSeparator(nn.Module):
    """A :class:`SpecUNet` as a waveform separator (labkit's Separator protocol).

    ``forward(mixture (batch, channels, samples))`` -> ``(batch, 2, channels, samples)``: the
    vocals ``istft(mask * X)`` and the accompaniment ``istft((1 - mask) * X)`` (= mixture minus
    vocals), both with the mixture's phase. Each channel is masked on its own.

    Arguments: ``unet``: the U-Net's config (see :func:`labkit.models.model_config`), default
    ``{"name": "spec_unet"}``; ``sample_rate``, ``n_fft``, ``hop_length``: the STFT the U-Net was
    trained with; ``channels``: what :func:`labkit.separate.separate` converts audio to (the
    U-Net itself is channel-agnostic); ``chunk_frames``: frames per chunk that
    :func:`labkit.separate.separate` feeds (``chunk_seconds`` is derived from it; 128 = the
    training patch). Build one around a trained U-Net with :meth:`from_unet`.
    """

    sources: tuple[str, ...] = ("vocals", "accompaniment")

    def __init__(self, unet: dict[str, Any] | None = None, sample_rate: int = 22050,
                 n_fft: int = 1024, hop_length: int = 256, channels: int = 1,
                 chunk_frames: int = 128) -> None:
        super().__init__()
        config = dict(unet) if unet is not None else {"name": "spec_unet"}
        if config.get("name") != "spec_unet":
            raise LabkitError(f"SpecUNetSeparator: unet={unet!r}; expected a spec_unet config, "
                              "e.g. model_config(SpecUNet(...))")
        if channels not in (1, 2):
            raise LabkitError(f"SpecUNetSeparator: channels={channels!r}; expected 1 or 2")
        if chunk_frames < 1:
            raise LabkitError(f"SpecUNetSeparator: chunk_frames={chunk_frames!r}; expected >= 1")
        self.unet = build_model(config)
        self.sample_rate = int(sample_rate)
        self.n_fft, self.hop_length = int(n_fft), int(hop_length)
        self.channels = int(channels)
        self.chunk_frames = int(chunk_frames)
        # A chunk of (frames - 1) * hop samples gives exactly `frames` centred STFT frames.
        self.chunk_seconds = (self.chunk_frames - 1) * self.hop_length / self.sample_rate

    @classmethod
    def from_unet(cls, unet: SpecUNet, **kwargs: Any) -> SpecUNetSeparator:
        """Wrap the trained ``unet`` (its weights are shared, not copied); ``kwargs`` as in the
        class."""
        wrapper = cls(unet=model_config(unet), **kwargs)
        wrapper.unet = unet
        return wrapper

    def spectrogram(self, mixture: Tensor) -> Tensor:
        """Complex STFT ``(batch, channels, bins, frames)`` of ``(batch, channels, samples)``."""
        from labkit.spectral import stft

        return stft(mixture, n_fft=self.n_fft, hop_length=self.hop_length)

    def mask(self, mixture: Tensor) -> Tensor:
        """The U-Net's vocal mask ``(batch, channels, bins, frames)`` for a waveform batch."""
        return self.unet(self.spectrogram(mixture).abs())

    def forward(self, mixture: Tensor) -> Tensor:
        """``(batch, channels, samples)`` -> ``(batch, 2, channels, samples)``."""
        from labkit.spectral import istft

        if mixture.ndim != 3:
            raise LabkitError(f"SpecUNetSeparator input has shape {tuple(mixture.shape)}; "
                              "expected (batch, channels, samples)")
        spec = self.spectrogram(mixture)
        mask = self.unet(spec.abs())
        masks = torch.stack([mask, 1.0 - mask], dim=1)  # (batch, 2, channels, bins, frames)
        return istft(apply_mask(masks, spec.unsqueeze(1)), n_fft=self.n_fft,
                     hop_length=self.hop_length, length=mixture.shape[-1])
