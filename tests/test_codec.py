"""The atom codec (labkit.atoms.codec) and its baselines (labkit.atoms.baselines)."""
import math

import numpy as np
import pytest
import torch

from labkit import metrics
from labkit.atoms import baselines, codec
from labkit.models.atoms import render_atoms

SR = 8000
LENGTH = 8000


def random_atoms(n: int = 50, seed: int = 0, chirp: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "amplitude": torch.rand(n, generator=g) * 0.3 + 0.01,
        "centre": torch.rand(n, generator=g) * LENGTH / SR,
        "width": torch.exp(torch.empty(n).uniform_(math.log(0.002), math.log(0.03), generator=g)),
        "frequency": torch.rand(n, generator=g) * 3500 + 50,
        "phase": (torch.rand(n, generator=g) * 2 - 1) * math.pi,
        "chirp": (torch.randn(n, generator=g) * 500) if chirp else torch.zeros(n),
    }


def render(p: dict[str, torch.Tensor]) -> np.ndarray:
    y = render_atoms(p["amplitude"], p["centre"], p["width"], p["frequency"], p["phase"], SR,
                     LENGTH, p["chirp"])
    return y.numpy()[None]


# --------------------------------------------------------------------------- scalar quantizer
@pytest.mark.parametrize("bits", [1, 3, 8, 12, 16])
def test_quantizer_error_is_at_most_half_a_step(bits):
    values = np.linspace(-2.0, 5.0, 1001)
    q = codec.quantize_values(values, -2.0, 5.0, bits)
    assert q.min() == 0 and q.max() == (1 << bits) - 1
    back = codec.dequantize_values(q, -2.0, 5.0, bits)
    step = 7.0 / ((1 << bits) - 1)
    assert np.abs(back - values).max() <= step / 2 + 1e-12


def test_quantizer_clips_and_keeps_grid_values():
    assert codec.quantize_values([-10.0, 10.0], 0.0, 1.0, 4).tolist() == [0, 15]
    grid = codec.dequantize_values(np.arange(16), 0.0, 1.0, 4)
    assert codec.quantize_values(grid, 0.0, 1.0, 4).tolist() == list(range(16))
    assert codec.quantize_values([3.0, 3.0], 3.0, 3.0, 8).tolist() == [0, 0]


@pytest.mark.parametrize("bits", [0, 17, 2.5, True])
def test_quantizer_rejects_bad_bits(bits):
    with pytest.raises(codec.CodecError, match="bits"):
        codec.quantize_values([0.0], 0.0, 1.0, bits)


def test_parse_bits():
    assert codec.parse_bits(6) == {"centre": 6, "width": 6, "frequency": 6, "amplitude": 6,
                                   "phase": 6}
    assert codec.parse_bits({"frequency": 12}, chirp=True)["chirp"] == 8
    assert codec.parse_bits({"frequency": 12})["frequency"] == 12
    with pytest.raises(codec.CodecError, match="unknown parameter"):
        codec.parse_bits({"pitch": 4})


# --------------------------------------------------------------------------- atoms
def test_quantize_errors_per_parameter():
    p = random_atoms(200)
    bits = {"centre": 10, "width": 7, "frequency": 12, "amplitude": 8, "phase": 7}
    q = codec.quantize(p, SR, LENGTH, bits)
    d = codec.dequantize(q)
    order = np.argsort(p["centre"].numpy(), kind="stable")
    orig = {k: v.numpy().astype(np.float64)[order] for k, v in p.items()}
    # centres: closed-loop gap coding keeps every error within half a step
    step = q.ranges["centre"][1] / ((1 << bits["centre"]) - 1)
    assert np.all(np.diff(d["centre"].numpy()) >= 0)
    assert np.abs(d["centre"].numpy() - orig["centre"]).max() <= step / 2 + 1e-6
    # log-quantized parameters: relative errors within half a step of the log range
    for name in ("width", "amplitude"):
        low, high = q.ranges[name]
        half = (high - low) / ((1 << bits[name]) - 1) / 2
        assert np.abs(np.log(d[name].numpy()) - np.log(orig[name])).max() <= half + 1e-5
    low, high = q.ranges["frequency"]
    assert np.abs(d["frequency"].numpy() - orig["frequency"]).max() <= (high - low) / 4095 / 2 + 1e-3


def test_moving_a_centre_keeps_the_carrier():
    # two atoms, 2 bits for the centre gaps: the first stored centre moves by ~12 ms
    p = {"amplitude": torch.tensor([0.5, 0.5]), "centre": torch.tensor([0.1, 0.437]),
         "width": torch.tensor([0.02, 0.02]), "frequency": torch.tensor([1000.0, 500.0]),
         "phase": torch.tensor([0.3, 0.0]), "chirp": torch.zeros(2)}
    bits = {"centre": 2, "width": 16, "frequency": 16, "amplitude": 16, "phase": 16}
    d = codec.dequantize(codec.quantize(p, SR, LENGTH, bits))
    shift = float(d["centre"][0]) - 0.1
    assert abs(shift) > 1e-3  # it did move
    expected = (0.3 + 2 * math.pi * 1000.0 * shift + math.pi) % (2 * math.pi) - math.pi
    assert float(d["phase"][0]) == pytest.approx(expected, abs=1e-3)
    # so the decoded atom still lines up with the original at the original centre
    t = int(0.1 * SR)
    original, decoded = render({k: v[:1] for k, v in p.items()}), render(
        {k: v[:1] for k, v in d.items()})
    carrier = lambda y: y[0, t - 8:t + 8] / np.abs(y[0, t - 8:t + 8]).max()
    np.testing.assert_allclose(carrier(decoded), carrier(original), atol=0.05)


def test_phase_wraps_around():
    p = random_atoms(3)
    p["phase"] = torch.tensor([math.pi - 1e-4, -math.pi, 0.0])
    p["frequency"] = torch.full((3,), 0.01)  # so that moving a centre does not turn the phase
    d = codec.dequantize(codec.quantize(p, SR, LENGTH, 8))
    order = np.argsort(p["centre"].numpy())
    diff = np.angle(np.exp(1j * (d["phase"].numpy() - p["phase"].numpy()[order])))
    assert np.abs(diff).max() <= math.pi / 256 + 1e-6


def test_zero_amplitude_atoms_are_not_stored():
    p = random_atoms(10)
    p["amplitude"][:4] = 0.0
    data = codec.encode(p, SR, LENGTH, 8)
    assert codec.read_header(data)["n_atoms"] == 6


# --------------------------------------------------------------------------- bytes
@pytest.mark.parametrize("chirp", [False, True])
def test_encode_decode_round_trip(chirp):
    p = random_atoms(120, seed=3, chirp=chirp)
    bits = {"centre": 9, "width": 5, "frequency": 12, "amplitude": 6, "phase": 6, "chirp": 8}
    data = codec.encode(p, SR, LENGTH, bits)
    head = codec.read_header(data)
    assert head["sample_rate"] == SR and head["length"] == LENGTH and head["n_atoms"] == 120
    assert head["bits"] == codec.parse_bits(bits, chirp)
    decoded, sr, length = codec.decode(data)
    expected = codec.dequantize(codec.quantize(p, SR, LENGTH, bits))
    assert (sr, length) == (SR, LENGTH)
    for name in expected:
        torch.testing.assert_close(decoded[name], expected[name])
    audio, sr = codec.decode_audio(data)
    assert audio.shape == (1, LENGTH) and audio.dtype == np.float32
    np.testing.assert_allclose(audio, render(expected), atol=1e-5)


def test_coder_choice_is_the_smallest():
    p = random_atoms(300)
    sizes = {name: len(codec.encode(p, SR, LENGTH, 8, coder=name))
             for name in ("none", "zlib", "lzma", "bz2")}
    assert len(codec.encode(p, SR, LENGTH, 8)) == min(sizes.values())
    # uncompressed: header + one byte per value
    assert sizes["none"] == codec.read_header(codec.encode(p, SR, LENGTH, 8))["header_bytes"] \
        + 300 * 5


def test_sixteen_bit_values_survive():
    p = random_atoms(40)
    data = codec.encode(p, SR, LENGTH, 16)
    q = codec.unpack(data)
    assert q.levels["frequency"].max() > 255  # really uses the second byte plane
    assert codec.unpack(codec.pack(q)).levels["frequency"].tolist() == \
        q.levels["frequency"].tolist()


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"RIFF" + d[4:], "not an atom file"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "version 9"),
    (lambda d: d[:30], "truncated"),
    (lambda d: d[:-20], "payload"),
])
def test_damaged_files_are_refused(damage, message):
    data = codec.encode(random_atoms(60), SR, LENGTH, 8, coder="lzma")
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(damage(data))


def test_empty_model_encodes():
    p = random_atoms(5)
    p["amplitude"][:] = 0
    audio, _ = codec.decode_audio(codec.encode(p, SR, LENGTH, 8))
    assert audio.shape == (1, LENGTH) and not audio.any()


# --------------------------------------------------------------------------- statistics
def test_bitrate_and_ratio():
    assert codec.bitrate_kbps(10_000, 80_000, 16_000) == pytest.approx(16.0)
    assert codec.bitrate_kbps(12_345, 3 * 44_100, 44_100) == pytest.approx(12_345 * 8 / 3 / 1000)
    assert codec.compression_ratio(10_000, 80_000) == pytest.approx(16.0)
    assert codec.compression_ratio(10_000, 80_000, channels=2) == pytest.approx(32.0)
    with pytest.raises(Exception, match="positive duration"):
        codec.bitrate_kbps(10, 0, 16_000)


def test_codec_stats_are_measured_on_the_bytes():
    p = random_atoms(80)
    reference = render(p)
    data = codec.encode(p, SR, LENGTH, 8)
    stats = codec.codec_stats(reference, data)
    decoded, _ = codec.decode_audio(data)
    assert stats["bytes"] == len(data)
    assert stats["kbps"] == pytest.approx(len(data) * 8 / 1.0 / 1000)
    assert stats["ratio"] == pytest.approx(2 * LENGTH / len(data))
    assert stats["snr"] == pytest.approx(metrics.snr(reference, decoded))
    assert stats["si_snr"] == pytest.approx(metrics.si_sdr(reference, decoded))
    finer = codec.codec_stats(reference, codec.encode(p, SR, LENGTH, 12))
    assert finer["snr"] > stats["snr"] and finer["bytes"] > stats["bytes"]


def test_mel_distance():
    x = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)
    assert codec.mel_distance(x, x, SR) == 0.0
    assert codec.mel_distance(x, 0.5 * x, SR) == pytest.approx(20 * math.log10(2), rel=1e-3)
    with pytest.raises(Exception, match="differ"):
        codec.mel_distance(x, x[:, :100], SR)


def test_fake_quantize_matches_the_codec_and_passes_gradients():
    p = random_atoms(30)
    q = codec.quantize(p, SR, LENGTH, 7)
    d = codec.dequantize(q)
    for name in ("amplitude", "phase", "width", "frequency"):
        v = d[name].clone().requires_grad_(True)
        out = codec.fake_quantize(v, name, 7, *q.ranges[name])
        torch.testing.assert_close(out, d[name], atol=1e-5, rtol=1e-5)
        out.sum().backward()
        assert torch.equal(v.grad, torch.ones_like(v))
    with pytest.raises(codec.CodecError, match="centre"):
        codec.fake_quantize(d["centre"], "centre", 8)


# --------------------------------------------------------------------------- baselines
def test_mdct_reconstructs_exactly():
    x = np.random.default_rng(1).standard_normal(3001)
    coefs = baselines.mdct(x, 128)
    assert coefs.shape[0] == 128
    np.testing.assert_allclose(baselines.imdct(coefs, 3001), x, atol=1e-10)


@pytest.mark.parametrize("lag", [0, 1105, -37])
def test_align_finds_a_known_delay(lag):
    x = np.random.default_rng(2).standard_normal(4000).astype(np.float32)
    late = np.concatenate([np.zeros(lag), x]) if lag >= 0 else x[-lag:]
    aligned, found = baselines.align(x, late)
    assert found == lag
    start = max(0, -lag)  # an early estimate lacks its first samples
    np.testing.assert_allclose(aligned[0, start:], x[start:], atol=1e-6)


@pytest.mark.parametrize("kind", ["mdct", "stft"])
def test_topk_codec(kind):
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-t)).astype(np.float32)
    data = baselines.topk_encode(x, SR, 10**6, kind, bits=16)  # every coefficient, fine grid
    y, sr = baselines.topk_decode(data)
    assert sr == SR and y.shape == (1, SR)
    assert metrics.snr(x[None], y) > 40
    small, k = baselines.topk_at_bytes(x, SR, 400, kind)
    assert len(small) <= 400 and k >= 1
    assert len(baselines.topk_encode(x, SR, k + 1, kind)) > 400 or k + 1 > x.size


def test_original_phase_is_a_cheat():
    t = np.arange(SR) / SR
    x = (np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 1200 * t)).astype(np.float32)
    shifted = (np.sin(2 * np.pi * 300 * t + 2.0)
               + 0.5 * np.sin(2 * np.pi * 1200 * t + 1.0)).astype(np.float32)
    honest = metrics.snr(x[None], shifted[None])
    cheat = metrics.snr(x[None], baselines.with_original_phase(shifted, x))
    assert honest < 0
    assert cheat > 20
    np.testing.assert_allclose(baselines.with_original_phase(x, x)[0], x, atol=1e-4)


def test_mp3_roundtrip_is_aligned_and_measured():
    t = np.arange(2 * 16000) / 16000
    x = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    decoded, n_bytes, lag = baselines.lossy_roundtrip(x, 16000, "mp3", 0.95, "CONSTANT")
    assert decoded.shape == (1, x.size) and n_bytes > 0
    assert lag == 1105  # libsndfile's LAME: constant bit rate at 16 kHz has this encoder delay
    assert metrics.snr(x[None], decoded) > 10
    chosen = baselines.match_bitrate(x, 16000, "mp3", 16.0, levels=[0.8, 0.95, 0.98])
    assert chosen["compression_level"] == 0.95
    assert chosen["kbps"] == pytest.approx(chosen["bytes"] * 8 / 2.0 / 1000)
