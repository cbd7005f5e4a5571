"""Known answers for labkit.metrics, and agreement with museval and fast-bss-eval."""
import math
import shutil
import warnings

import numpy as np
import pytest
import torch

from labkit.errors import AudioError
from labkit.metrics import aggregate, bss_eval, lsd, sdr, sdr_fast, si_sdr, snr

SR = 8000


def needs_ffmpeg(test):
    """museval imports only with the ffmpeg binaries on PATH."""
    skip = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="museval needs ffmpeg")
    return pytest.mark.ffmpeg(skip(test))


def noise(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def gain_db(g):
    return -20 * math.log10(abs(1 - g))


# --------------------------------------------------------------------------- MUSDB convention
@needs_ffmpeg
def test_sdr_museval_known_answers_and_silent_frames():
    """4 frames of 1 s: a half-scaled copy is 6.02 dB in every frame (not scale invariant); a
    frame where one reference is silent is NaN for every source and left out of the median."""
    ref = noise((2, 2, 4 * SR))
    ref[1, :, 2 * SR:3 * SR] = 0.0  # source 1 silent in frame 2
    est = np.empty_like(ref)
    est[0] = 0.5 * ref[0]
    est[1] = ref[1] + 10 ** (-10 / 20) * noise((2, 4 * SR), seed=1)  # ~10 dB SNR, non-silent
    medians, frames = sdr(ref, est, sr=SR, return_frames=True)
    assert frames.shape == (2, 4)
    assert np.isnan(frames[:, 2]).all()
    np.testing.assert_allclose(frames[0, [0, 1, 3]], gain_db(0.5), atol=1e-9)
    expected = [
        10 * np.log10((ref[1, :, f * SR:(f + 1) * SR] ** 2).sum()
                      / ((est[1, :, f * SR:(f + 1) * SR] - ref[1, :, f * SR:(f + 1) * SR]) ** 2)
                      .sum())
        for f in (0, 1, 3)
    ]
    np.testing.assert_allclose(frames[1, [0, 1, 3]], expected, atol=1e-9)
    np.testing.assert_allclose(medians, [gain_db(0.5), np.median(expected)], atol=1e-9)
    # the direct backend reproduces museval
    direct_medians, direct_frames = sdr(ref, est, sr=SR, return_frames=True, backend="direct")
    np.testing.assert_allclose(direct_frames, frames, atol=1e-9)
    np.testing.assert_allclose(direct_medians, medians, atol=1e-9)


@needs_ffmpeg
def test_bss_eval_perfect_estimate_is_infinite_and_keys(no_warnings):
    ref = noise((2, 1, 2 * SR))
    scores = bss_eval(ref, ref, sr=SR)
    assert set(scores) == {"SDR", "ISR", "SIR", "SAR"}
    assert np.isposinf(scores["SDR"]).all()
    assert np.isposinf(sdr(ref, ref, sr=SR, backend="direct")).all()


def test_sdr_direct_matches_museval_framing_rules():
    # 2.5 frames: the partial last frame is dropped, like museval; shorter than a frame: one frame.
    ref = noise((1, 1, int(2.5 * SR)))
    est = ref + 0.1 * noise(ref.shape, seed=3)
    _, frames = sdr(ref, est, sr=SR, return_frames=True, backend="direct")
    assert frames.shape == (1, 2)
    _, frames = sdr(ref[..., :SR // 2], est[..., :SR // 2], sr=SR, return_frames=True,
                    backend="direct")
    assert frames.shape == (1, 1)


@needs_ffmpeg
@pytest.mark.parametrize("backend", ["museval", "direct"])
def test_sdr_of_a_source_silent_throughout_is_nan_without_warnings(backend, no_warnings):
    # museval itself raises on an all-zero source; the MUSDB median of all-NaN frames is NaN
    ref = noise((2, 1, 2 * SR))
    ref[0] = 0.0
    assert np.isnan(sdr(ref, ref + 0.1, sr=SR, backend=backend)).all()
    est = ref + 0.1
    est[1] = 0.0
    assert np.isnan(bss_eval(ref + 0.1, est, sr=SR)["SAR"]).all()


def test_sdr_needs_three_dimensions_and_known_backend():
    with pytest.raises(AudioError, match=r"expected \(sources, channels, samples\)"):
        sdr(noise((2, SR)), noise((2, SR)), sr=SR)
    with pytest.raises(ValueError, match="backend='fast'"):
        sdr(noise((1, 1, SR)), noise((1, 1, SR)), sr=SR, backend="fast")


# --------------------------------------------------------------------------- whole-signal SDR
@needs_ffmpeg
def test_sdr_fast_agrees_with_museval_sources_version():
    import museval.metrics

    ref = noise((2, 1, 2 * SR))
    taps = np.array([0.6, 0.3, -0.2, 0.1])
    est = np.stack([np.convolve(ref[j, 0], taps)[: 2 * SR] for j in range(2)])[:, None]
    est = est + 0.3 * ref[::-1] + 0.2 * noise(ref.shape, seed=5)
    expected = museval.metrics.bss_eval(
        ref.transpose(0, 2, 1), est.transpose(0, 2, 1), window=np.inf, hop=np.inf,
        bsseval_sources_version=True)[0][:, 0]
    np.testing.assert_allclose(sdr_fast(ref, est), expected, atol=1e-6)


def test_sdr_fast_is_gain_and_filter_invariant():
    ref = noise((2, 2, SR))
    est = ref + 0.5 * noise(ref.shape, seed=1)
    base = sdr_fast(ref, est)
    np.testing.assert_allclose(sdr_fast(ref, 0.3 * est), base, atol=1e-9)
    filtered = np.apply_along_axis(lambda x: np.convolve(x, [0.5, 0.25])[:SR], -1, ref)
    # not infinite: BSSEval's Toeplitz correlation is exact only away from the signal edges
    assert (sdr_fast(ref, filtered) > 40).all()


def test_mixture_of_two_equal_uncorrelated_sources_scores_zero_db():
    stems = noise((2, 2, 4 * SR))
    mixture = np.broadcast_to(stems.sum(0), stems.shape)
    np.testing.assert_allclose(sdr_fast(stems, mixture), 0.0, atol=0.2)
    np.testing.assert_allclose(si_sdr(stems, mixture), 0.0, atol=0.2)
    energies = (stems ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(snr(stems, mixture),
                               10 * np.log10(energies / energies[::-1]), atol=1e-9)


def test_whole_signal_scores_handle_silence_without_warnings(no_warnings):
    ref = noise((3, 2, SR))
    ref[1] = 0.0
    est = ref + 0.1 * noise(ref.shape, seed=2)
    est[2] = 0.0
    for fn in (sdr_fast, si_sdr):
        scores = fn(ref, est)
        assert np.isfinite(scores[0]) and np.isnan(scores[1]) and np.isneginf(scores[2])
    scores = snr(ref, est)
    assert np.isfinite(scores[0]) and np.isnan(scores[1]) and scores[2] == 0.0


def test_perfect_estimate_is_infinite_or_huge(no_warnings):
    ref = noise((2, 2, SR))
    assert (sdr_fast(ref, ref) > 100).all()
    assert np.isposinf(snr(ref, ref)).all()
    assert (si_sdr(ref, 2.0 * ref) > 100).all()


# --------------------------------------------------------------------------- SI-SDR and SNR
def test_si_sdr_known_answer_and_scale_invariance():
    t = np.arange(SR) / SR
    ref = np.sin(2 * np.pi * 100 * t)
    orthogonal = 0.1 * np.cos(2 * np.pi * 100 * t)  # whole periods: exactly orthogonal to ref
    expected = 10 * np.log10((ref ** 2).sum() / (orthogonal ** 2).sum())  # 20 dB
    for g in (1.0, 0.25, -3.0):
        assert si_sdr(ref, g * (ref + orthogonal)) == pytest.approx(expected, abs=1e-9)


def test_si_sdr_matches_fast_bss_eval():
    import fast_bss_eval

    ref = noise((3, 1, SR))
    est = ref + 0.7 * noise(ref.shape, seed=4)
    expected = fast_bss_eval.si_sdr(torch.from_numpy(ref[:, 0]), torch.from_numpy(est[:, 0]))
    # fast_bss_eval solves the best permutation; these estimates are each closest to their own
    np.testing.assert_allclose(si_sdr(ref, est), expected.numpy(), atol=1e-6)


def test_si_sdr_eps_keeps_everything_finite(no_warnings):
    ref = np.zeros((2, 1, 100))
    assert np.isfinite(si_sdr(ref, ref, eps=1e-8)).all()


@pytest.mark.parametrize(("g", "expected"), [(0.5, 6.0206), (2.0, 0.0), (1.1, 20.0), (0.0, 0.0)])
def test_snr_of_a_scaled_copy(g, expected):
    ref = noise((2, SR))
    assert snr(ref, g * ref) == pytest.approx(expected, abs=1e-4)


# --------------------------------------------------------------------------- shapes and input
def test_shapes_numpy_and_torch():
    ref = noise((3, 2, 2, 1000))  # (batch, sources, channels, samples)
    est = ref + noise(ref.shape, seed=1)
    scores = si_sdr(ref, est)
    assert scores.shape == (3, 2)
    assert isinstance(si_sdr(ref[0, 0], est[0, 0]), float)
    assert isinstance(snr(ref[0, 0, 0], est[0, 0, 0]), float)
    torch_scores = si_sdr(torch.from_numpy(ref).float(), torch.from_numpy(est).float())
    np.testing.assert_allclose(torch_scores, scores, atol=1e-4)
    # channels are pooled: the score of a stereo signal is not the mean of its channels' scores
    pooled = 10 * np.log10((ref[0, 0] ** 2).sum() / ((ref[0, 0] - est[0, 0]) ** 2).sum())
    assert snr(ref[0, 0], est[0, 0]) == pytest.approx(pooled)


def test_bad_inputs_raise_audio_error():
    with pytest.raises(AudioError, match=r"references have shape \(2, 100\) but estimates "
                                         r"\(2, 99\)"):
        snr(np.ones((2, 100)), np.ones((2, 99)))
    bad = np.ones((2, 100))
    bad[0, 5] = np.nan
    with pytest.raises(AudioError, match="estimates contains NaN"):
        si_sdr(np.ones((2, 100)), bad)


# --------------------------------------------------------------------------- LSD
def reference_lsd(ref, est, n_fft=512, hop=128, eps=1e-10):
    """LSD written out with torch.stft, independently of labkit.spectral."""
    def power(x):
        spec = torch.stft(torch.from_numpy(x), n_fft, hop, window=torch.hann_window(n_fft,
                          dtype=torch.float64), center=True, pad_mode="reflect",
                          return_complex=True)
        return spec.abs().numpy() ** 2
    diff = np.log10(power(ref) + eps) - np.log10(power(est) + eps)
    return np.sqrt((diff ** 2).mean(axis=-2)).mean()


def test_lsd_identical_is_zero_and_matches_reference():
    ref = noise((2, SR))
    est = ref + 0.3 * noise(ref.shape, seed=1)
    assert lsd(ref, ref, n_fft=512, hop_length=128) == 0.0
    assert lsd(ref, est, n_fft=512, hop_length=128) == pytest.approx(reference_lsd(ref, est),
                                                                    rel=1e-9)


@pytest.mark.parametrize("g", [2.0, 0.1])
def test_lsd_of_a_constant_gain(g):
    ref = noise((3, 2, SR))
    assert lsd(ref, g * ref, n_fft=512, hop_length=128) == pytest.approx(
        [abs(2 * np.log10(g))] * 3, abs=1e-6)
    np.testing.assert_allclose(lsd(ref, g * ref, n_fft=512, hop_length=128, match_energy=True),
                               0.0, atol=1e-6)


def test_lsd_frequency_range_scores_only_that_band():
    ref = noise(2 * SR)
    spectrum = np.fft.rfft(ref)
    freqs = np.fft.rfftfreq(ref.size, 1 / SR)
    spectrum[freqs > 2000] *= 0.01  # the estimate lost its high band (-40 dB)
    est = np.fft.irfft(spectrum, ref.size)
    low = lsd(ref, est, sr=SR, n_fft=512, hop_length=128, freq_range=(None, 1800))
    high = lsd(ref, est, sr=SR, n_fft=512, hop_length=128, freq_range=(2200, None))
    assert low < 0.05
    assert high == pytest.approx(4.0, abs=0.1)  # 2 * log10(100): 40 dB of power = 4 bels
    with pytest.raises(ValueError, match="needs the sample rate"):
        lsd(ref, est, freq_range=(2000, None))
    with pytest.raises(ValueError, match="holds no STFT bin"):
        lsd(ref, est, sr=SR, n_fft=512, freq_range=(5000, None))


# --------------------------------------------------------------------------- aggregate
def test_aggregate_is_the_median_over_tracks_ignoring_nan(no_warnings):
    per_track = [
        {"vocals": 1.0, "accompaniment": math.nan, "bass": math.nan},
        {"vocals": 3.0, "accompaniment": 2.0, "bass": math.nan},
        {"vocals": 10.0, "accompaniment": 4.0},
    ]
    result = aggregate(per_track)
    assert list(result) == ["vocals", "accompaniment", "bass"]
    assert result["vocals"] == 3.0
    assert result["accompaniment"] == 3.0
    assert math.isnan(result["bass"])
    assert aggregate([]) == {}
