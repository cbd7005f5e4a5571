"""The spectrogram U-Net (labkit.models.spec_unet): structure, shapes, mask range, skip gradients,
padding, the masked L1 loss and the waveform wrapper."""
import numpy as np
import pytest
import torch
from torch import nn

from labkit import signals
from labkit.errors import LabkitError
from labkit.models import build_model, model_config
from labkit.models.spec_unet import (
    DecoderBlock,
    EncoderBlock,
    SpecUNet,
    SpecUNetSeparator,
    apply_mask,
    masked_l1_loss,
)
from labkit.spectral import istft, stft


def tiny(**overrides):
    """A small U-Net, enough to test the wiring in milliseconds."""
    torch.manual_seed(0)
    return SpecUNet(**{"levels": 3, "base_channels": 4, "kernel_size": 3, **overrides})


def conv_widths(model):
    return ([(b.conv.in_channels, b.conv.out_channels) for b in model.encoder],
            [(b.deconv.in_channels, b.deconv.out_channels) for b in model.decoder],
            (model.last.in_channels, model.last.out_channels))


# ----------------------------------------------------------------------------------- structure
def test_default_is_the_practical_structure():
    model = SpecUNet()
    encoder, decoder, last = conv_widths(model)
    assert encoder == [(1, 32), (32, 64), (64, 128), (128, 256)]
    # each decoder input after the first is twice as wide: upsampled features + the skip
    assert decoder == [(256, 128), (256, 64), (128, 32)]
    assert last == (64, 1)
    assert all(b.conv.stride == (2, 2) for b in model.encoder)
    assert all(b.deconv.stride == (2, 2) for b in model.decoder) and model.last.stride == (2, 2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.LeakyReLU) for m in model.modules()) == 4 + 3
    assert not model.log_input


def test_paper_configuration():
    model = SpecUNet.paper()
    encoder, _, _ = conv_widths(model)
    assert [c for _, c in encoder] == [16, 32, 64, 128, 256, 512]
    assert all(b.conv.kernel_size == (5, 5) for b in model.encoder)
    # batch norm after every (transposed) convolution except the last one
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6 + 5
    assert not isinstance(model.last, nn.BatchNorm2d)
    dropouts = [b.dropout.p if isinstance(b.dropout, nn.Dropout2d) else 0.0
                for b in model.decoder]
    assert dropouts == [0.5, 0.5, 0.5, 0.0, 0.0]
    assert model.multiple == 64


def test_registry_round_trip():
    model = SpecUNet(levels=2, base_channels=8, norm="batch", log_input=True)
    config = model_config(model)
    assert config["name"] == "spec_unet" and config["levels"] == 2 and config["norm"] == "batch"
    rebuilt = build_model(config)
    assert isinstance(rebuilt, SpecUNet)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 33, 20)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), model(x))


@pytest.mark.parametrize("kwargs, message", [
    ({"levels": 0}, "levels=0"),
    ({"base_channels": 0}, "base_channels=0"),
    ({"kernel_size": 1}, "kernel_size=1"),
    ({"norm": "layer"}, "norm='layer'"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"log_floor": 0.0}, "log_floor=0.0"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(LabkitError, match=message.replace("(", r"\(")):
        SpecUNet(**kwargs)


def test_bad_input_shape_is_named():
    with pytest.raises(LabkitError, match=r"shape \(513,\)"):
        tiny()(torch.rand(513))


# ----------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("shape", [(2, 513, 128), (1, 37, 21), (3, 16, 8), (2, 2, 65, 30)])
@pytest.mark.parametrize("norm", [None, "batch"])
def test_mask_has_the_input_shape_and_lies_in_0_1(shape, norm):
    model = tiny(norm=norm)
    x = torch.rand(*shape) * 20
    mask = model(x).detach()
    assert mask.shape == x.shape
    assert mask.dtype == torch.float32
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0


def test_the_practical_input_shape_at_full_size():
    mask = SpecUNet(base_channels=2)(torch.rand(1, 513, 128))
    assert mask.shape == (1, 513, 128)


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5])
def test_blocks_halve_and_double_for_any_kernel(kernel_size):
    x = torch.rand(2, 3, 16, 10)
    down = EncoderBlock(3, 5, kernel_size)(x)
    assert down.shape == (2, 5, 8, 5)
    up = DecoderBlock(5, 4, kernel_size)(down, skip=torch.rand(2, 3, 16, 10))
    assert up.shape == (2, 4 + 3, 16, 10)
    assert DecoderBlock(5, 4, kernel_size)(down).shape == (2, 4, 16, 10)


def test_padding_then_cropping_equals_running_on_the_padded_input():
    """Bins and frames are zero-padded to a multiple of 2**levels and the mask cropped back."""
    model = tiny().eval()
    x = torch.rand(2, 37, 21) * 5
    assert model.multiple == 8
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3))  # to 40 x 24
    torch.testing.assert_close(model(x), model(padded)[:, :37, :21])


def test_channels_are_processed_independently():
    model = tiny().eval()
    x = torch.rand(2, 2, 40, 16)
    both = model(x)
    torch.testing.assert_close(both[:, 1], model(x[:, 1]))
    torch.testing.assert_close(both[:, 0], model(x[:, 0]))


def test_log_input_feeds_log1p_to_the_network():
    torch.manual_seed(3)
    plain = tiny().eval()
    logged = tiny(log_input=True).eval()
    logged.load_state_dict(plain.state_dict())
    x = torch.rand(1, 24, 16) * 50
    torch.testing.assert_close(logged(x), plain(torch.log1p(x)))
    floored = tiny(log_input=True, log_floor=0.01).eval()
    floored.load_state_dict(plain.state_dict())
    torch.testing.assert_close(floored(x), plain(torch.log1p(x / 0.01)))


# ----------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("levels", [2, 4, 6])
def test_every_skip_connection_carries_gradient(levels):
    """Cut each skip off the encoder (a fresh leaf) and check the loss has gradient through it."""
    torch.manual_seed(0)
    model = SpecUNet(levels=levels, base_channels=2, kernel_size=3, norm="batch")
    leaves = []

    def detach_skip(block, args):
        x, skip = args
        leaf = skip.detach().requires_grad_(True)
        leaves.append(leaf)
        return x, leaf

    handles = [b.register_forward_pre_hook(detach_skip) for b in model.decoder]
    x = torch.rand(2, 70, 70) * 10
    mask = model(x)
    masked_l1_loss(mask, x, 0.3 * x).backward()
    for h in handles:
        h.remove()
    assert len(leaves) == levels - 1
    for leaf in leaves:
        assert leaf.grad is not None and float(leaf.grad.abs().sum()) > 0
    # and every parameter learns
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_skip_count_matches_levels():
    """levels - 1 skips: every encoder output except the bottleneck is concatenated once."""
    model = SpecUNet(levels=4, base_channels=2, kernel_size=3)
    seen = []
    for block in model.decoder:
        block.register_forward_pre_hook(lambda b, args: seen.append(tuple(args[1].shape)))
    model(torch.rand(1, 32, 32))
    assert seen == [(1, 8, 4, 4), (1, 4, 8, 8), (1, 2, 16, 16)]


# ----------------------------------------------------------------------------------- loss
def test_masked_l1_loss_known_values():
    mixture = torch.tensor([[2.0, 4.0], [0.0, 8.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 8.0]])
    mask = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    # |1-1| + |2-1| + |0-0| + |8-8| = 1, mean over 4
    assert float(masked_l1_loss(mask, mixture, target)) == pytest.approx(0.25)
    assert torch.equal(apply_mask(mask, mixture), mask * mixture)
    with pytest.raises(LabkitError, match="must have one shape"):
        masked_l1_loss(mask, mixture, target[:1])


# ----------------------------------------------------------------------------------- wrapper
def wrapper_with_constant_mask(value, **kwargs):
    """A separator whose U-Net outputs the constant mask ``value`` (weights 0, bias logit)."""
    separator = SpecUNetSeparator(unet=model_config(tiny()), **kwargs)
    with torch.no_grad():
        for p in separator.unet.parameters():
            p.zero_()
        separator.unet.last.bias.fill_(float(np.log(value / (1 - value))))
    return separator.eval()


def test_separator_protocol_attributes():
    separator = SpecUNetSeparator()
    assert separator.sources == ("vocals", "accompaniment")
    assert separator.sample_rate == 22050 and separator.channels == 1
    assert round(separator.chunk_seconds * 22050) == 127 * 256  # 128 STFT frames per chunk
    assert model_config(separator)["unet"] is None  # the default U-Net
    unet = tiny(norm="batch")
    config = model_config(SpecUNetSeparator.from_unet(unet))
    assert config["name"] == "spec_unet_separator" and config["unet"] == model_config(unet)
    rebuilt = build_model(config)
    assert isinstance(rebuilt.unet, SpecUNet) and rebuilt.unet.levels == 3


def test_separator_applies_the_mask_with_the_mixture_phase():
    mixture = torch.from_numpy(signals.music_like(1.0, sr=22050, seed=1)).float()[None]
    separator = wrapper_with_constant_mask(0.25)
    out = separator(mixture)
    assert out.shape == (1, 2, 1, mixture.shape[-1])
    # a constant mask g on the mixture's STFT, inverted with its phase, is g times the mixture
    torch.testing.assert_close(out[:, 0], 0.25 * mixture, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, 1], 0.75 * mixture, atol=1e-5, rtol=1e-4)


def test_separator_outputs_add_up_to_the_mixture_for_any_mask():
    torch.manual_seed(1)
    unet = tiny(norm="batch", log_input=True).eval()
    separator = SpecUNetSeparator.from_unet(unet, channels=2)
    assert separator.unet is unet and separator.channels == 2
    mixture = torch.randn(2, 2, 5000) * 0.1
    out = separator(mixture)
    assert out.shape == (2, 2, 2, 5000)
    torch.testing.assert_close(out.sum(1), mixture, atol=1e-5, rtol=1e-4)
    # the vocals are istft(mask * X) with the network's mask
    spec = stft(mixture)
    expected = istft(unet(spec.abs()) * spec, length=5000)
    torch.testing.assert_close(out[:, 0], expected, atol=1e-6, rtol=1e-5)


def test_separator_runs_through_labkit_separate_at_another_rate_and_channels():
    from labkit.audio import resample
    from labkit.separate import separate

    stereo = signals.music_like(2.0, sr=44100, seed=2, channels=2)
    separator = wrapper_with_constant_mask(0.5)
    out = separate(separator, stereo, sr=44100, overlap=0.5, progress=False)
    assert out.shape == (2, *stereo.shape)
    # a mono model at 22.05 kHz on stereo 44.1 kHz: down-mixed, resampled there and back (which
    # drops what lies above 11 kHz), separated; mask 0.5 halves that mono mix
    mono = resample(resample(stereo.mean(0), 44100, 22050), 22050, 44100)[:stereo.shape[-1]]
    for channel in (0, 1):
        np.testing.assert_allclose(out[0, channel], 0.5 * mono, atol=2e-3)
        np.testing.assert_allclose(out[:, channel].sum(0), mono, atol=2e-3)


def test_separator_rejects_other_models_and_shapes():
    with pytest.raises(LabkitError, match="spec_unet config"):
        SpecUNetSeparator(unet={"name": "wave_unet"})
    with pytest.raises(LabkitError, match="channels=3"):
        SpecUNetSeparator(channels=3)
    with pytest.raises(LabkitError, match=r"\(batch, channels, samples\)"):
        SpecUNetSeparator()(torch.rand(100))
