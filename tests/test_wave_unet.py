"""The waveform U-Nets of notebook 03 (labkit.models.wave_unet): blocks, lengths, shapes, outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from labkit.errors import LabkitError
from labkit.models import build_model, model_config
from labkit.models.wave_unet import (
    STEMS,
    DownBlock,
    StollerWaveUNet,
    UpBlock,
    WaveUNet,
    apply_masks,
    centre_crop,
    describe,
    filter_bins,
    match_length,
    stft_filterbank,
)

TINY = {"filter_length": 64, "stride": 32, "n_filters": 64, "depth": 2, "width": 8,
        "growth": 1.5, "sample_rate": 8000}
TINY_STOLLER = {"levels": 3, "filters": 4, "down_kernel": 5, "up_kernel": 3,
                "sample_rate": 8000}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- helpers
def test_match_length_crops_and_pads_at_the_end():
    x = torch.arange(7.0).reshape(1, 7)
    assert torch.equal(match_length(x, 4), torch.tensor([[0.0, 1, 2, 3]]))
    assert torch.equal(match_length(x, 9), torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 0, 0]]))
    assert match_length(x, 7) is x
    assert match_length(torch.ones(2, 3, 5), 1).shape == (2, 3, 1)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 33, 100])
def test_match_length_aligns_a_stride_two_round_trip(n):
    """down (ceil(n/2)) then up (x2) gives n + (n odd): match_length restores n exactly."""
    x = torch.randn(1, 3, n)
    down = F.avg_pool1d(F.pad(x, (0, n % 2)), 2)
    up = F.interpolate(down, scale_factor=2, mode="nearest")
    assert up.shape[-1] == n + n % 2
    assert match_length(up, n).shape == (1, 3, n)


def test_centre_crop_takes_the_middle_and_drops_an_odd_sample_at_the_end():
    x = torch.arange(10.0)
    assert torch.equal(centre_crop(x, 4), torch.tensor([3.0, 4, 5, 6]))
    assert torch.equal(centre_crop(x, 5), torch.tensor([2.0, 3, 4, 5, 6]))
    assert torch.equal(centre_crop(x, 10), x)
    with pytest.raises(LabkitError, match="has 10 samples, fewer than the 11"):
        centre_crop(x, 11)


def test_apply_masks_shared_and_per_channel():
    mixture = torch.randn(2, 3, 10)
    shared = torch.rand(2, 4, 8)
    out = apply_masks(mixture, shared)
    assert out.shape == (2, 4, 3, 8)
    for s in range(4):
        for c in range(3):
            assert torch.allclose(out[:, s, c], shared[:, s] * mixture[:, c, :8])
    per_channel = torch.rand(2, 4, 3, 12)
    out = apply_masks(mixture, per_channel)
    assert out.shape == (2, 4, 3, 10)
    assert torch.allclose(out, per_channel[..., :10] * mixture[:, None])
    # filterbank coefficients (batch, channels, filters, frames) with masks of the same layout
    coefficients = torch.randn(1, 2, 5, 7)
    masks = torch.rand(1, 4, 2, 5, 7)
    assert torch.allclose(apply_masks(coefficients, masks), masks * coefficients[:, None])


# ----------------------------------------------------------------------------- filterbank
@pytest.mark.parametrize("length, stride", [(512, 256), (512, 128), (64, 16), (63, 21),
                                            (32, 32), (1, 1)])
def test_stft_filterbank_reconstructs_perfectly(length, stride):
    analysis, synthesis = stft_filterbank(length, stride=stride)
    assert analysis.shape == synthesis.shape == (length, 1, length)
    x = torch.randn(2, 1, 40 * length + 7, dtype=torch.float64)
    y = F.conv_transpose1d(F.conv1d(x, analysis.double(), stride=stride), synthesis.double(),
                           stride=stride)
    inner = slice(length, x.shape[-1] - 2 * length)  # every sample under all its frames
    assert torch.allclose(y[..., inner], x[..., inner], atol=1e-5)


def test_stft_filterbank_equals_torch_stft():
    n, hop = 256, 64
    analysis, _ = stft_filterbank(n, stride=hop)
    x = torch.randn(4000, dtype=torch.float64)
    coefficients = F.conv1d(x[None, None], analysis.double(), stride=hop)[0]  # (n, frames)
    reference = torch.stft(x, n, hop, window=torch.hann_window(n, dtype=torch.float64),
                           center=False, return_complex=True)  # (n/2+1, frames)
    half = n // 2
    assert torch.allclose(coefficients[:half + 1], reference.real, atol=1e-4)
    # sin rows are minus the imaginary parts of bins 1 .. n/2 - 1 (filters are float32)
    assert torch.allclose(coefficients[half + 1:], -reference.imag[1:half], atol=1e-4)


def test_stft_filterbank_with_fewer_filters_keeps_the_lowest_bins():
    full, _ = stft_filterbank(64, stride=16)
    fewer, _ = stft_filterbank(64, 20, stride=16)
    assert fewer.shape == (20, 1, 64)
    bins = filter_bins(20)
    assert bins.tolist() == [*range(11), *range(1, 10)]
    assert torch.allclose(fewer[:11], full[:11])  # cosines of bins 0..10
    assert torch.allclose(fewer[11:], full[33:42])  # sines of bins 1..9


def test_energies_are_the_power_spectrogram_at_initialisation():
    model = WaveUNet(**TINY)
    x = torch.randn(1, 1, 2000, dtype=torch.float64)
    coefficients = F.conv1d(x, model.analysis.weight.double(), stride=32)[:, None]
    energies = model.energies(coefficients)[0, 0]  # (bins, frames)
    reference = torch.stft(x[0, 0], 64, 32, window=torch.hann_window(64, dtype=torch.float64),
                           center=False, return_complex=True).abs() ** 2
    assert energies.shape == reference.shape == (33, reference.shape[-1])
    assert torch.allclose(energies, reference, rtol=1e-4, atol=1e-3)


def test_both_filters_of_a_pair_get_the_same_mask():
    model = WaveUNet(**TINY).eval()
    with torch.no_grad():
        model.outlet.weight.zero_()
        model.outlet.bias.uniform_(-3, 3)  # a fixed, different mask per source, channel and bin
    x = torch.randn(1, 2, 900)
    with torch.no_grad():
        masks, coefficients = model.masks(x)
        per_filter = masks[:, :, :, model.filter_bins]
        expected = model.decode(apply_masks(coefficients, per_filter), model.context + 900)
        out = model(x)
    assert torch.allclose(out, expected[..., model.context:], atol=1e-6)
    assert torch.equal(per_filter[..., 1, :], per_filter[..., 33, :])  # cosine and sine of bin 1


def test_stft_filterbank_rejects_impossible_sizes():
    with pytest.raises(LabkitError, match="n_filters=65, stride=16"):
        stft_filterbank(64, n_filters=65, stride=16)
    with pytest.raises(LabkitError, match="stride=65"):
        stft_filterbank(64, stride=65)


# ----------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("n", [1, 2, 15, 16, 101])
def test_down_and_up_blocks_keep_odd_lengths_aligned(n):
    down = DownBlock(3, 6, kernel_size=5, norm="batch")
    up = UpBlock(6, 6, 3, kernel_size=5, norm="batch")
    x = torch.randn(2, 3, n)
    skip, smaller = down(x)
    assert skip.shape == (2, 6, n)
    assert smaller.shape == (2, 6, (n + 1) // 2)
    assert up(smaller, skip).shape == (2, 3, n)


# ----------------------------------------------------------------------------- WaveUNet
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n", [1, 31, 32, 1000, 4097])
def test_wave_unet_shapes_for_any_length(channels, n):
    model = WaveUNet(channels=channels, **TINY)
    out = model(torch.randn(2, channels, n))
    assert out.shape == (2, 4, channels, n)
    assert torch.isfinite(out).all()


def test_wave_unet_masks_are_in_unit_range_with_the_documented_shape():
    model = WaveUNet(**TINY)
    masks, coefficients = model.masks(torch.randn(3, 2, 700))
    frames = model.frames(700)
    assert coefficients.shape == (3, 2, 64, frames)
    assert masks.shape == (3, 4, 2, 33, frames)  # one mask per filter pair: 64 // 2 + 1 bins
    assert frames % 2 ** TINY["depth"] == 0
    assert masks.min() >= 0 and masks.max() <= 1


@pytest.mark.parametrize("config", [TINY, {**TINY, "filterbank_init": "random"},
                                    {**TINY, "filter_length": 1, "stride": 1, "n_filters": 1}])
def test_wave_unet_with_open_masks_returns_the_mixture(config):
    """Masks of one pass the mixture through; with the STFT filterbank (or none) exactly."""
    model = WaveUNet(**config).eval()
    with torch.no_grad():
        model.outlet.weight.zero_()
        model.outlet.bias.fill_(40.0)  # sigmoid(40) == 1 in float32
    x = torch.randn(2, 2, 1234)
    out = model(x)
    if config.get("filterbank_init") == "random":
        assert not torch.allclose(out, x[:, None].expand_as(out), atol=1e-2)
    else:
        assert torch.allclose(out, x[:, None].expand_as(out), atol=1e-5)


def test_synthesis_filters_are_stored_at_the_analysis_filters_scale():
    model = WaveUNet(**TINY)
    analysis, synthesis = stft_filterbank(64, 64, 32)
    assert model.synthesis.gain == pytest.approx(float(synthesis.norm() / analysis.norm()))
    assert model.synthesis.gain < 0.1
    stored = model.synthesis.conv.weight.detach()
    assert float(stored.norm() / model.analysis.weight.detach().norm()) == pytest.approx(1.0)
    assert torch.allclose(stored * model.synthesis.gain, synthesis)


def test_wave_unet_starts_from_an_even_split():
    """Masks start near 1/4, so the four estimates add up to about the mixture."""
    model = WaveUNet(**TINY).eval()
    x = torch.randn(2, 2, 3000)
    with torch.no_grad():
        masks, _ = model.masks(x)
        out = model(x)
    assert abs(float(masks.mean()) - 0.25) < 0.05
    assert float((out.sum(1) - x).abs().mean() / x.abs().mean()) < 0.1


def test_wave_unet_valid_length():
    model = WaveUNet(**TINY)
    for n in [1, 31, 32, 33, 500, 4096]:
        valid = model.valid_length(n)
        assert valid >= n
        assert model.valid_length(valid) == valid
        assert model.frames(valid + 1) == model.frames(valid) + 2 ** TINY["depth"]
        frames = (model.context + valid) / model.stride
        assert frames == int(frames) and int(frames) % 2 ** TINY["depth"] == 0


def test_wave_unet_gradients_reach_every_parameter():
    model = WaveUNet(**TINY)
    out = model(torch.randn(2, 2, 500))
    out.abs().mean().backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_wave_unet_config_round_trip_and_protocol():
    model = WaveUNet(**TINY)
    config = model_config(model)
    assert config["name"] == "wave_unet" and config["filter_length"] == 64
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 2, 300)
    model.eval()
    rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))
    assert model.sources == STEMS and model.sample_rate == 8000 and model.channels == 2


@pytest.mark.parametrize("bad, message", [
    ({"channels": 3}, "channels=3"), ({"stride": 128}, "stride=128 is longer"),
    ({"filterbank_init": "mel"}, "filterbank_init='mel'"), ({"sources": ()}, "sources is empty"),
    ({"norm": "layer"}, "norm='layer'"), ({"growth": 0.5}, "growth=0.5"),
])
def test_wave_unet_rejects_bad_settings(bad, message):
    with pytest.raises(LabkitError, match=message):
        WaveUNet(**{**TINY, **bad})


def test_wave_unet_rejects_a_wrong_channel_count():
    with pytest.raises(LabkitError, match=r"expected \(batch, 2, samples\)"):
        WaveUNet(**TINY)(torch.randn(1, 1, 100))


def test_separate_runs_a_wave_unet_at_another_rate():
    from labkit.separate import separate

    model = WaveUNet(**{**TINY, "chunk_seconds": 0.5})
    audio = np.random.default_rng(0).standard_normal((1, 11025)).astype(np.float32) * 0.1
    out = separate(model, audio, 11025, progress=False)
    assert out.shape == (4, 1, 11025) and np.isfinite(out).all()


# ----------------------------------------------------------------------------- Stoller
@pytest.mark.parametrize("n", range(1, 140, 7))
def test_stoller_length_arithmetic_matches_the_network(n):
    model = StollerWaveUNet(**TINY_STOLLER)
    expected = model.output_length(n)
    if expected < 1:
        with pytest.raises(RuntimeError):
            model.core(torch.randn(1, 2, n))
        return
    assert model.core(torch.randn(1, 2, n)).shape == (1, 4, 2, expected)


def test_stoller_valid_and_input_lengths():
    model = StollerWaveUNet(**TINY_STOLLER)
    for n in [1, 10, 64, 333]:
        needed = model.input_length(n)
        assert model.output_length(needed) >= n
        assert model.output_length(needed - 1) < n
        valid = model.valid_length(n)
        assert valid >= n and model.output_length(model.input_length(valid)) == valid


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n", [1, 99, 1000])
def test_stoller_stems_sum_to_the_mixture(channels, n):
    """The difference output: the last source is the mixture minus the others."""
    model = StollerWaveUNet(channels=channels, **TINY_STOLLER)
    x = torch.randn(2, channels, n)
    out = model(x)
    assert out.shape == (2, 4, channels, n)
    assert torch.allclose(out.sum(dim=1), x, atol=1e-5)


def test_stoller_rejects_even_kernels_and_one_source():
    with pytest.raises(LabkitError, match="down_kernel=4; use an odd size"):
        StollerWaveUNet(down_kernel=4)
    with pytest.raises(LabkitError, match="at least two sources"):
        StollerWaveUNet(sources=("vocals",))


# ----------------------------------------------------------------------------- describe
def test_describe_lists_every_level_and_the_valid_lengths():
    lines: list[str] = []
    model = WaveUNet(**TINY)
    rows = describe(model, 1000, print_fn=lines.append)
    names = [name for name, _ in rows]
    assert names == ["input (padded)", "filterbank", "inlet", "encoder 1", "encoder 2",
                     "bottleneck", "decoder 2", "decoder 1", "masks", "output"]
    shapes = dict(rows)
    frames = model.frames(1000)
    assert shapes["filterbank"] == (1, 2, 64, frames)
    assert shapes["encoder 2"] == (1, round(8 * 1.5 ** 2), frames // 4)
    assert shapes["output"] == (1, 4, 2, 1000)
    assert f"valid input lengths near 1000: {model.valid_length(1000)}" in lines[-1]
    assert model.training  # describe restores the mode

    lines.clear()
    stoller = StollerWaveUNet(**TINY_STOLLER)
    rows = describe(stoller, 500, print_fn=lines.append)
    assert rows[-1] == ("output", (1, 4, 2, 500))
    assert [name for name, _ in rows][1:4] == ["encoder 1", "encoder 2", "encoder 3"]
    assert "valid output lengths near 500" in lines[-1]
