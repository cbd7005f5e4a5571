"""Checks for the exercises of notebook 03 (the waveform U-Net for four stems).

The downsampling block (03.1) is checked against a reference computed with
``torch.nn.functional`` from the student's own weights, and by its output lengths for odd and even
inputs. Skip alignment, mask application and the loss (03.2, 03.3, 03.5) are compared with
:mod:`labkit.models.wave_unet` and :mod:`labkit.stems` on odd lengths and mismatched shapes; the
segment sampler (03.4) by its behaviour (a slice of the song, the mixture the sum of the stems,
every offset reachable, zero padding); the Wave-U-Net length arithmetic (03.6) against
:class:`labkit.models.wave_unet.StollerWaveUNet`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labkit.grading.registry import exercise, expect
from labkit.models import wave_unet


# --------------------------------------------------------------------------- helpers
def _tensor(value: object, what: str) -> torch.Tensor:
    expect(value is not None, f"{what} returned None; did you forget the return statement?")
    expect(isinstance(value, torch.Tensor),
           f"{what} returned a {type(value).__name__}, expected a torch tensor")
    return value


def _shape(out: torch.Tensor | np.ndarray, expected: tuple[int, ...], what: str,
           hint: str = "") -> None:
    expect(tuple(out.shape) == tuple(expected),
           f"{what} has shape {tuple(out.shape)}, expected {tuple(expected)}{hint}")


def _close(out: torch.Tensor, ref: torch.Tensor, what: str, atol: float = 1e-5,
           rtol: float = 1e-4, hint: str = "") -> None:
    out, ref = out.detach().double(), ref.detach().double()
    if torch.allclose(out, ref, atol=atol, rtol=rtol):
        return
    if not out.abs().any() and ref.abs().any():
        expect(False, f"{what} is all zeros, expected nonzero values{hint}")
    error = float((out - ref).abs().max())
    expect(False, f"{what} differs from the reference by up to {error:.3g} (largest reference "
                  f"value {float(ref.abs().max()):.3g}){hint}")


def _only(module: nn.Module, kind: type, what: str) -> nn.Module:
    found = [m for m in module.modules() if isinstance(m, kind)]
    expect(len(found) == 1, f"{what} holds {len(found)} {kind.__name__} layers, expected exactly 1")
    return found[0]


# --------------------------------------------------------------------------- 03.1 down block
@exercise("03.1", function="DownsampleBlock", timeout=60)
def check_downsample_block(DownsampleBlock):
    """One strided Conv1d + BatchNorm1d + LeakyReLU(0.2); lengths ceil(n / 2)."""
    expect(isinstance(DownsampleBlock, type) and issubclass(DownsampleBlock, nn.Module),
           f"{getattr(DownsampleBlock, '__name__', DownsampleBlock)!s} should be a class derived "
           "from torch.nn.Module")
    torch.manual_seed(0)
    for in_channels, out_channels, kernel in [(2, 8, 5), (3, 16, 15), (1, 4, 1)]:
        what = f"DownsampleBlock({in_channels}, {out_channels}, kernel_size={kernel})"
        block = DownsampleBlock(in_channels, out_channels, kernel_size=kernel)
        conv = _only(block, nn.Conv1d, what)
        expect((conv.in_channels, conv.out_channels) == (in_channels, out_channels),
               f"{what}: its Conv1d maps {conv.in_channels} -> {conv.out_channels} channels, "
               f"expected {in_channels} -> {out_channels}")
        expect(conv.kernel_size == (kernel,) and conv.stride == (2,),
               f"{what}: its Conv1d has kernel_size={conv.kernel_size[0]}, "
               f"stride={conv.stride[0]}; expected kernel_size={kernel}, stride=2 (the stride "
               "is what halves the length)")
        expect(conv.padding == (kernel // 2,),
               f"{what}: its Conv1d has padding={conv.padding}, expected {kernel // 2} "
               "(kernel_size // 2, so that n samples give ceil(n / 2))")
        norm = _only(block, nn.BatchNorm1d, what)
        expect(norm.num_features == out_channels,
               f"{what}: BatchNorm1d normalises {norm.num_features} channels, expected "
               f"{out_channels}")
        for n in (1, 2, 15, 16, 101):
            x = torch.randn(3, in_channels, n)
            out = _tensor(block(x), f"{what} on (3, {in_channels}, {n})")
            _shape(out, (3, out_channels, math.ceil(n / 2)), f"{what} on (3, {in_channels}, {n})",
                   " (a stride-2 level turns n samples into ceil(n / 2))")
        # eval mode: batch norm uses its running statistics, so the block is a fixed function
        with torch.no_grad():
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
        block.eval()
        x = torch.randn(2, in_channels, 37)
        with torch.no_grad():
            out = _tensor(block(x), f"{what} in eval mode")
            ref = F.leaky_relu(F.batch_norm(conv(x), norm.running_mean, norm.running_var,
                                            norm.weight, norm.bias, False, 0.0, norm.eps), 0.2)
        _close(out, ref, f"{what} in eval mode",
               hint=" (expected LeakyReLU(0.2) of BatchNorm1d of the strided Conv1d, in that "
                    "order)")
        block.train()


# --------------------------------------------------------------------------- 03.2 alignment
@exercise("03.2", function="align", timeout=60)
def check_align(align):
    """Crop or zero-pad the last axis at the end, any leading shape."""
    x = torch.arange(7.0).reshape(1, 7)
    out = _tensor(align(x, 4), "align(arange(7), 4)")
    _shape(out, (1, 4), "align(arange(7), 4)")
    expect(torch.equal(out, torch.tensor([[0.0, 1, 2, 3]])),
           f"align(arange(7), 4) gives {out.tolist()}, expected [[0, 1, 2, 3]] (crop at the end)")
    out = _tensor(align(x, 9), "align(arange(7), 9)")
    expect(tuple(out.shape) == (1, 9) and torch.equal(
        out, torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 0, 0]])),
        f"align(arange(7), 9) gives {out.tolist()}, expected [[0, 1, 2, 3, 4, 5, 6, 0, 0]] "
        "(zeros added at the end)")
    torch.manual_seed(3)
    for shape, length in [((2, 3, 17), 16), ((2, 3, 16), 17), ((4, 1, 101), 101),
                          ((5,), 2), ((1, 2, 3, 9), 12)]:
        x = torch.randn(shape)
        before = x.clone()
        what = f"align(x of shape {shape}, {length})"
        out = _tensor(align(x, length), what)
        ref = wave_unet.match_length(x, length)
        _shape(out, ref.shape, what)
        _close(out, ref, what)
        expect(torch.equal(x, before), f"{what} changed its input x; return a new tensor")


# --------------------------------------------------------------------------- 03.3 masks
@exercise("03.3", function="apply_masks", timeout=60)
def check_apply_masks(apply_masks):
    """Masks (batch, sources, n) or (batch, sources, channels, n) on (batch, channels, n)."""
    torch.manual_seed(4)
    cases = [((2, 2, 50), (2, 4, 50)), ((2, 2, 50), (2, 4, 47)), ((3, 1, 20), (3, 4, 23)),
             ((2, 2, 30), (2, 4, 2, 30)), ((1, 2, 31), (1, 3, 2, 29))]
    for mixture_shape, mask_shape in cases:
        mixture = torch.randn(mixture_shape)
        masks = torch.rand(mask_shape)
        what = f"apply_masks(mixture {mixture_shape}, masks {mask_shape})"
        out = _tensor(apply_masks(mixture, masks), what)
        ref = wave_unet.apply_masks(mixture, masks)
        length = min(mixture_shape[-1], mask_shape[-1])
        _shape(out, ref.shape, what,
               f" = (batch, sources, channels, min({mixture_shape[-1]}, {mask_shape[-1]}) = "
               f"{length})")
        _close(out, ref, what, hint=" (estimate of source s, channel c = mask[s] * mixture[c])")
    ones = apply_masks(torch.full((1, 2, 8), 3.0), torch.ones(1, 4, 8))
    expect(torch.equal(_tensor(ones, "apply_masks with masks of ones"),
                       torch.full((1, 4, 2, 8), 3.0)),
           "with masks of ones every source should equal the mixture")


# --------------------------------------------------------------------------- 03.4 segments
def _find_start(song: np.ndarray, segment: np.ndarray) -> int | None:
    """The offset at which ``segment`` (4, C, L) appears in ``song`` (4, C, N), if any."""
    length = segment.shape[-1]
    for start in range(song.shape[-1] - length + 1):
        if np.array_equal(song[..., start:start + length], segment):
            return start
    return None


@exercise("03.4", function="sample_segment", timeout=60)
def check_sample_segment(sample_segment):
    """A random slice of the same offset in every stem; the mixture their sum; zero padding."""
    rng = np.random.default_rng(7)
    song = rng.standard_normal((4, 2, 20)).astype(np.float32)
    starts = set()
    for seed in range(300):
        what = f"sample_segment(stems (4, 2, 20), 15, rng seeded {seed})"
        result = sample_segment(song, 15, np.random.default_rng(seed))
        expect(isinstance(result, tuple) and len(result) == 2,
               f"{what} should return a tuple (mixture, stems), got "
               f"{type(result).__name__}")
        mixture, segment = (np.asarray(r) for r in result)
        _shape(mixture, (2, 15), f"the mixture of {what}")
        _shape(segment, (4, 2, 15), f"the stems of {what}")
        start = _find_start(song, segment)
        expect(start is not None,
               f"the stems of {what} are not one slice song[:, :, start:start + 15] of the input "
               "(every stem and channel must be cut at the same offset)")
        expect(np.allclose(mixture, segment.sum(axis=0), atol=1e-6),
               f"the mixture of {what} is not the sum of the returned stems")
        starts.add(start)
        again = sample_segment(song, 15, np.random.default_rng(seed))[1]
        expect(np.array_equal(np.asarray(again), segment),
               f"{what} gave a different segment for the same seed: draw the offset from rng "
               "only")
    expect(starts == set(range(6)),
           f"over 300 draws the offsets were {sorted(starts)}; a 15-sample segment of a "
           "20-sample song can start at every offset 0 to 5 (all should appear)")
    short = rng.standard_normal((4, 1, 6)).astype(np.float32)
    mixture, segment = (np.asarray(r) for r in sample_segment(short, 10,
                                                              np.random.default_rng(0)))
    _shape(segment, (4, 1, 10), "sample_segment(stems (4, 1, 6), 10, rng)",
           " (a song shorter than a segment is zero-padded at the end)")
    expect(np.array_equal(segment[..., :6], short) and not segment[..., 6:].any(),
           "sample_segment(stems (4, 1, 6), 10, rng) should return the whole song followed by "
           "4 zeros")
    expect(np.allclose(mixture, segment.sum(axis=0), atol=1e-6),
           "for a short song, too, the mixture should be the sum of the returned stems")


# --------------------------------------------------------------------------- 03.5 loss
@exercise("03.5", function="stem_l1_loss", timeout=60)
def check_stem_l1_loss(stem_l1_loss):
    """Mean absolute error over every stem, channel and sample; crop to the shorter length."""
    from labkit import stems

    estimates = torch.zeros(1, 4, 2, 5)
    targets = torch.ones(1, 4, 2, 5)
    value = _tensor(stem_l1_loss(estimates, targets), "stem_l1_loss(zeros, ones)")
    expect(value.numel() == 1 and value.ndim == 0,
           f"stem_l1_loss returns shape {tuple(value.shape)}, expected a scalar (shape ())")
    expect(abs(float(value) - 1.0) < 1e-6,
           f"stem_l1_loss(zeros, ones) = {float(value):.4g}, expected 1 (the mean, not the sum)")
    torch.manual_seed(5)
    for est_shape, tgt_shape in [((2, 4, 2, 100), (2, 4, 2, 100)), ((3, 4, 1, 50),
                                                                    (3, 4, 1, 53)),
                                 ((2, 4, 2, 61), (2, 4, 2, 60))]:
        estimates = torch.randn(est_shape, requires_grad=True)
        targets = torch.randn(tgt_shape)
        what = f"stem_l1_loss(estimates {est_shape}, targets {tgt_shape})"
        value = _tensor(stem_l1_loss(estimates, targets), what)
        _close(value.reshape(()), stems.stem_l1_loss(estimates, targets), what,
               hint=" (crop both to the shorter length, then the mean of |estimates - targets|)")
        expect(value.requires_grad,
               f"{what} does not depend on the estimates (was it computed under no_grad or "
               "from .detach()ed tensors?)")
        value.backward()
        expect(estimates.grad is not None and estimates.grad.abs().sum() > 0,
               f"{what}: no gradient reaches the estimates")


# --------------------------------------------------------------------------- 03.6 lengths
@exercise("03.6", function="wave_unet_output_length", timeout=60)
def check_wave_unet_output_length(wave_unet_output_length):
    """Valid convolutions, decimation, interpolation to 2m - 1: against StollerWaveUNet."""
    for levels, down, up in [(1, 15, 5), (3, 5, 3), (6, 15, 5), (12, 15, 5)]:
        model = wave_unet.StollerWaveUNet(levels=levels, filters=1, down_kernel=down,
                                          up_kernel=up)
        start = model.input_length(1)
        for n in [1, 10, start - 1, start, start + 1, start + 2, start + 1000, 16384 + 7]:
            if n < 1:
                continue
            what = (f"wave_unet_output_length({n}, levels={levels}, down_kernel={down}, "
                    f"up_kernel={up})")
            value = wave_unet_output_length(n, levels, down, up)
            expect(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
                   f"{what} returned a {type(value).__name__}, expected an int")
            expected = model.output_length(n)
            expect(int(value) == expected,
                   f"{what} = {value}, expected {expected}"
                   + (" (0 when the input is too short for the network)" if expected == 0
                      else ""))
