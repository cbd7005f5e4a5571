"""Checks for the exercises of notebook 02 (the spectrogram U-Net for vocal separation).

The blocks (02.1, 02.2) are checked by behaviour, not by attribute names: the student's
convolution and batch-norm weights are copied into labkit's reference block
(:mod:`labkit.models.spec_unet`) and both must give the same output. The mask, loss and
reconstruction (02.3 to 02.5) are compared with known values and with :mod:`labkit.spectral`;
the assembled U-Net (02.6) by shapes, mask range and gradients through every skip connection.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from labkit import spectral
from labkit.grading.registry import exercise, expect
from labkit.models import spec_unet


# --------------------------------------------------------------------------- helpers
def _tensor(value: object, what: str) -> torch.Tensor:
    expect(value is not None, f"{what} returned None; did you forget the return statement?")
    expect(isinstance(value, torch.Tensor),
           f"{what} returned a {type(value).__name__}, expected a torch tensor")
    return value


def _shape(out: torch.Tensor, expected: tuple[int, ...], what: str, hint: str = "") -> None:
    expect(tuple(out.shape) == tuple(expected),
           f"{what} has shape {tuple(out.shape)}, expected {tuple(expected)}{hint}")


def _close(out: torch.Tensor, ref: torch.Tensor, what: str, atol: float = 1e-5,
           rtol: float = 1e-4, hint: str = "") -> None:
    out, ref = out.detach(), ref.detach()
    if torch.allclose(out, ref, atol=atol, rtol=rtol):
        return
    if not out.abs().any() and ref.abs().any():
        expect(False, f"{what} is all zeros, expected nonzero values{hint}")
    error = float((out - ref).abs().max())
    expect(False, f"{what} differs from the reference by up to {error:.3g} (largest reference "
                  f"value {float(ref.abs().max()):.3g}){hint}")


def _build(cls: type, args: tuple, what: str) -> nn.Module:
    expect(isinstance(cls, type) and issubclass(cls, nn.Module),
           f"{getattr(cls, '__name__', cls)!s} should be a class derived from torch.nn.Module")
    module = cls(*args)
    expect(isinstance(module, nn.Module), f"{what} is not an nn.Module")
    return module


def _only(module: nn.Module, kind: type, what: str) -> nn.Module:
    found = [m for m in module.modules() if isinstance(m, kind)]
    expect(len(found) == 1, f"{what} holds {len(found)} {kind.__name__} layers, expected exactly 1")
    return found[0]


def _copy_batch_norm(student: nn.Module, reference: nn.BatchNorm2d, what: str) -> None:
    bn = _only(student, nn.BatchNorm2d, what)
    expect(bn.num_features == reference.num_features,
           f"{what}'s BatchNorm2d normalises {bn.num_features} channels, expected "
           f"{reference.num_features} (one per output channel of the convolution)")
    reference.load_state_dict(bn.state_dict())


# --------------------------------------------------------------------------- 02.1 encoder block
@exercise("02.1", function="EncoderBlock", timeout=60)
def check_encoder_block(EncoderBlock):
    """Halves bins and frames; equals Conv2d(stride 2) -> BatchNorm2d -> LeakyReLU(0.2)."""
    torch.manual_seed(0)
    for c_in, c_out, k, shape in ((1, 8, 5, (2, 1, 16, 12)), (4, 6, 3, (3, 4, 10, 8)),
                                  (2, 3, 5, (1, 2, 64, 32))):
        what = f"EncoderBlock({c_in}, {c_out}, {k})"
        block = _build(EncoderBlock, (c_in, c_out, k), what).train()
        x = torch.randn(*shape)
        out = _tensor(block(x), f"{what}(x of shape {shape})")
        expected = (shape[0], c_out, shape[2] // 2, shape[3] // 2)
        _shape(out, expected, f"{what}(x of shape {shape})",
               " (stride 2 halves bins and frames; pad the convolution by kernel_size // 2)")
        conv = _only(block, nn.Conv2d, what)
        expect(tuple(conv.weight.shape) == (c_out, c_in, k, k),
               f"{what}'s Conv2d weight has shape {tuple(conv.weight.shape)}, expected "
               f"{(c_out, c_in, k, k)}")
        expect(conv.stride == (2, 2), f"{what}'s Conv2d has stride {conv.stride}, expected 2")
        reference = spec_unet.EncoderBlock(c_in, c_out, k, norm="batch").train()
        with torch.no_grad():
            reference.conv.weight.copy_(conv.weight)
        _copy_batch_norm(block, reference.norm, what)
        # In training mode batch norm removes the per-channel mean, so a conv bias cancels out.
        _close(out, reference(x), f"{what}(x)",
               hint=" (expected Conv2d with stride 2, then BatchNorm2d, then LeakyReLU with "
                    "negative slope 0.2)")
    out.sum().backward()
    expect(conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0,
           "the convolution's weight gets no gradient: is the output computed from it?")


# --------------------------------------------------------------------------- 02.2 decoder block
@exercise("02.2", function="DecoderBlock", timeout=60)
def check_decoder_block(DecoderBlock):
    """Doubles bins and frames with ConvTranspose2d -> BatchNorm2d -> LeakyReLU(0.2), then
    concatenates the skip after the upsampled channels."""
    torch.manual_seed(1)
    for c_in, c_out, c_skip, k, shape in ((8, 4, 4, 5, (2, 8, 4, 3)), (6, 3, 5, 3, (3, 6, 5, 4))):
        what = f"DecoderBlock({c_in}, {c_out}, {k})"
        block = _build(DecoderBlock, (c_in, c_out, k), what).train()
        x = torch.randn(*shape)
        skip = torch.randn(shape[0], c_skip, 2 * shape[2], 2 * shape[3], requires_grad=True)
        call = f"{what}(x of shape {shape}, skip of shape {tuple(skip.shape)})"
        out = _tensor(block(x, skip), call)
        _shape(out, (shape[0], c_out + c_skip, 2 * shape[2], 2 * shape[3]), call,
               " (the upsampled x has out_channels channels and twice the bins and frames; the "
               "skip's channels are concatenated after them)")
        alone = _tensor(block(x), f"{what}(x) without a skip")
        _shape(alone, (shape[0], c_out, 2 * shape[2], 2 * shape[3]), f"{what}(x) without a skip",
               " (skip=None: return the upsampled x alone)")
        deconv = _only(block, nn.ConvTranspose2d, what)
        expect(tuple(deconv.weight.shape) == (c_in, c_out, k, k),
               f"{what}'s ConvTranspose2d weight has shape {tuple(deconv.weight.shape)}, "
               f"expected {(c_in, c_out, k, k)}")
        expect(deconv.stride == (2, 2),
               f"{what}'s ConvTranspose2d has stride {deconv.stride}, expected 2")
        _close(out[:, c_out:], skip, f"the last {c_skip} channels of {call}",
               hint=" (they must be the skip itself: torch.cat([upsampled, skip], dim=1))")
        reference = spec_unet.DecoderBlock(c_in, c_out, k, norm="batch").train()
        with torch.no_grad():
            reference.deconv.weight.copy_(deconv.weight)
        _copy_batch_norm(block, reference.norm, what)
        _close(out[:, :c_out], reference(x), f"the first {c_out} channels of {call}",
               hint=" (expected ConvTranspose2d with stride 2, padding kernel_size // 2 and "
                    "output_padding 1, then BatchNorm2d, then LeakyReLU with slope 0.2)")
    out.sum().backward()
    expect(skip.grad is not None and float(skip.grad.abs().sum()) > 0,
           "no gradient flows back into the skip connection")


# --------------------------------------------------------------------------- 02.3 the mask
@exercise("02.3", function="apply_mask", timeout=60)
def check_apply_mask(apply_mask):
    """(mask * X, (1 - mask) * X) for magnitudes and complex STFTs, any leading dimensions."""
    torch.manual_seed(2)
    mixture = torch.rand(2, 1, 9, 7) * 5
    mask = torch.rand(2, 1, 9, 7)
    result = apply_mask(mask, mixture)
    expect(isinstance(result, (tuple, list)) and len(result) == 2,
           f"apply_mask returned {type(result).__name__}, expected a pair (vocals, "
           "accompaniment)")
    vocals, accompaniment = (_tensor(r, "apply_mask") for r in result)
    _shape(vocals, mixture.shape, "the vocals")
    _shape(accompaniment, mixture.shape, "the accompaniment")
    _close(vocals, mask * mixture, "the vocals", hint=" (expected mask * mixture)")
    _close(accompaniment, (1 - mask) * mixture, "the accompaniment",
           hint=" (expected (1 - mask) * mixture: what the vocals leave)")
    _close(vocals + accompaniment, mixture, "vocals + accompaniment",
           hint=" (the two estimates must add up to the mixture)")
    X = torch.polar(mixture[0, 0], torch.rand(9, 7) * 6.28)
    vocals, accompaniment = apply_mask(mask[0, 0], X)
    expect(torch.is_tensor(vocals) and vocals.is_complex(),
           "apply_mask on a complex STFT must return complex estimates (keep the mixture's "
           "phase: multiply, do not take the magnitude)")
    _close(torch.view_as_real(vocals), torch.view_as_real(mask[0, 0] * X),
           "the vocals of a complex STFT")


# --------------------------------------------------------------------------- 02.4 the loss
@exercise("02.4", function="masked_l1_loss", timeout=60)
def check_masked_l1_loss(masked_l1_loss):
    """mean |mask * X - Y| as a scalar tensor with gradients to the mask."""
    mixture = torch.tensor([[2.0, 4.0], [0.0, 8.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 8.0]])
    mask = torch.tensor([[0.5, 0.5], [1.0, 1.0]], requires_grad=True)
    loss = _tensor(masked_l1_loss(mask, mixture, target), "masked_l1_loss")
    expect(loss.ndim == 0, f"masked_l1_loss returned shape {tuple(loss.shape)}, expected a "
                           "scalar (0-dimensional) tensor: take the mean")
    value = float(loss.detach())
    hint = ""
    if math.isclose(value, 2.0, abs_tol=1e-6):
        hint = " (you summed; the loss is the mean over all elements)"
    elif math.isclose(value, 1.0, abs_tol=1e-6):
        hint = " (that is the squared error; the loss is the absolute error)"
    expect(math.isclose(value, 0.5, abs_tol=1e-6),
           f"masked_l1_loss on the small example is {value:.4g}, expected 0.5 = mean of |mask * "
           f"X - Y| = (0 + 2 + 0 + 0) / 4{hint}")
    loss.backward()
    expect(mask.grad is not None, "the loss has no gradient with respect to the mask: compute "
                                  "it with torch operations on the mask itself")
    # d/dmask mean|mX - Y| = sign(mX - Y) X / N; the element where mX = Y has subgradient 0
    expected = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    _close(mask.grad, expected, "the gradient with respect to the mask")
    torch.manual_seed(3)
    for shape in ((3, 17, 11), (2, 2, 5, 4)):
        m, x, y = torch.rand(*shape), torch.rand(*shape) * 3, torch.rand(*shape)
        out = _tensor(masked_l1_loss(m, x, y), f"masked_l1_loss on shape {shape}")
        _close(out, (m * x - y).abs().mean(), f"masked_l1_loss on shape {shape}")


# --------------------------------------------------------------------------- 02.5 reconstruction
@exercise("02.5", function="reconstruct", timeout=60)
def check_reconstruct(reconstruct):
    """iSTFT of mask * STFT(mixture) with the mixture's phase, the length of the mixture."""
    torch.manual_seed(4)
    mixture = torch.randn(2, 1, 5000) * 0.1
    n_fft, hop = 512, 128
    X = spectral.stft(mixture, n_fft, hop)
    ones = torch.ones(X.shape)
    out = _tensor(reconstruct(ones, mixture, n_fft, hop), "reconstruct(mask of ones, ...)")
    _shape(out, mixture.shape, "reconstruct(mask of ones, mixture)",
           " (pass length=mixture.shape[-1] to istft)")
    zero_phase = spectral.istft(X.abs() + 0j, n_fft, hop, length=mixture.shape[-1])
    expect(not torch.allclose(out.detach(), zero_phase, atol=1e-5),
           "reconstruct used the magnitude with a zero phase: multiply the mask into the complex "
           "STFT, so that the mixture's phase is kept")
    _close(out, mixture, "reconstruct with a mask of ones", atol=1e-5,
           hint=" (a mask of ones must give the mixture back: STFT, multiply, iSTFT with the "
                "mixture's phase)")
    mask = torch.rand(X.shape)
    out = _tensor(reconstruct(mask, mixture, n_fft, hop), "reconstruct")
    expected = spectral.istft(mask * X, n_fft, hop, length=mixture.shape[-1])
    _close(out, expected, "reconstruct(random mask, mixture)", atol=1e-5)
    odd = torch.randn(3001) * 0.1
    mask = torch.rand(spectral.stft(odd, 1024, 256).shape)
    out = _tensor(reconstruct(mask, odd, 1024, 256), "reconstruct on a mono (samples,) signal")
    _close(out, spectral.istft(mask * spectral.stft(odd, 1024, 256), 1024, 256, length=3001),
           "reconstruct on a (samples,) signal of 3001 samples")


# --------------------------------------------------------------------------- 02.6 the U-Net
@exercise("02.6", function="TinyUNet", timeout=90)
def check_tiny_unet(TinyUNet):
    """Any bins/frames in, a mask in [0, 1] of the same shape out, every skip carries gradient."""
    torch.manual_seed(5)
    for levels, width in ((2, 4), (3, 2)):
        what = f"TinyUNet(levels={levels}, base_channels={width})"
        expect(isinstance(TinyUNet, type) and issubclass(TinyUNet, nn.Module),
               "TinyUNet should be a class derived from torch.nn.Module")
        model = TinyUNet(levels=levels, base_channels=width)
        for shape in ((2, 33, 19), (1, 64, 16), (1, 129, 40)):
            x = torch.rand(*shape) * 10
            mask = _tensor(model(x), f"{what}(x of shape {shape})")
            _shape(mask, shape, f"{what}(x of shape {shape})",
                   f" (pad bins and frames up to a multiple of 2 ** levels = {2 ** levels}, "
                   "then crop the mask back)")
            expect(float(mask.min()) >= 0 and float(mask.max()) <= 1,
                   f"{what} gives mask values in [{float(mask.min()):.3g}, "
                   f"{float(mask.max()):.3g}], expected [0, 1] (end with a sigmoid)")
        decoders = [m for m in model.modules() if type(m).__name__ == "DecoderBlock"]
        expect(len(decoders) == levels - 1,
               f"{what} has {len(decoders)} DecoderBlock modules, expected levels - 1 = "
               f"{levels - 1} (the last layer is a plain ConvTranspose2d + sigmoid)")
        leaves: list[torch.Tensor] = []

        def cut_skip(block, args, kwargs, leaves=leaves):
            skip = kwargs.get("skip", args[1] if len(args) > 1 else None)
            expect(skip is not None, "a DecoderBlock was called without a skip connection")
            leaf = skip.detach().requires_grad_(True)
            leaves.append(leaf)
            if "skip" in kwargs:
                return args, {**kwargs, "skip": leaf}
            return (args[0], leaf, *args[2:]), kwargs

        handles = [d.register_forward_pre_hook(cut_skip, with_kwargs=True) for d in decoders]
        x = torch.rand(2, 40, 24) * 10
        try:
            model(x).mean().backward()
        finally:
            for h in handles:
                h.remove()
        expect(len(leaves) == levels - 1, f"{what}: {len(leaves)} skip connections were used, "
                                          f"expected {levels - 1}")
        for i, leaf in enumerate(leaves):
            expect(leaf.grad is not None and float(leaf.grad.abs().sum()) > 0,
                   f"{what}: skip connection {i + 1} carries no gradient to the output")
        shapes = sorted(tuple(leaf.shape[1:]) for leaf in leaves)
        expected = sorted((width * 2 ** i, -(-40 // 2 ** levels) * 2 ** (levels - 1 - i),
                           -(-24 // 2 ** levels) * 2 ** (levels - 1 - i))
                          for i in range(levels - 1))
        expect(shapes == expected, f"{what}: the skips have shapes (channels, bins, frames) "
                                   f"{shapes}, expected {expected} (each encoder output except "
                                   "the deepest, joined at the same resolution)")
