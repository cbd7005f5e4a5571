"""Oracle masks, the do-nothing floor, oracle-safe evaluation and the report table."""
import json
import math

import numpy as np
import pytest
import torch

from labkit import signals
from labkit.errors import AudioError, LabkitError
from labkit.metrics import sdr, sdr_fast
from labkit.oracles import (
    Oracle,
    do_nothing,
    evaluate_tracks,
    oracle,
    oracle_masks,
    oracle_separation,
    oracle_separation_at,
    report_data,
    sample_mask_oracle,
    separation_report,
    targets_for,
)

SR = 16000
N_FFT, HOP = 1024, 256


def tones(freqs, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return 0.2 * sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs))


@pytest.fixture(scope="module")
def song():
    """A 2-source song: a speech-like "vocal" over a music-like accompaniment, stereo."""
    vocals = signals.speech_like(3.0, sr=SR, seed=1)
    accompaniment = signals.music_like(3.0, sr=SR, seed=2, channels=2)
    return np.stack([np.repeat(vocals, 2, axis=0), accompaniment]).astype(np.float32)


# --------------------------------------------------------------------------- masks
@pytest.mark.parametrize("kind", ["irm1", "irm2"])
def test_ratio_masks_sum_to_one_even_in_silent_bins(song, kind):
    stems = song.copy()
    stems[:, :, SR:2 * SR] = 0.0  # every stem silent for a second
    masks = oracle_masks(stems, kind, n_fft=N_FFT, hop_length=HOP)
    assert masks.shape == (2, 2, N_FFT // 2 + 1, 1 + stems.shape[-1] // HOP)
    assert masks.dtype == np.float32
    np.testing.assert_allclose(masks.sum(0), 1.0, atol=1e-6)
    assert masks.min() >= 0 and masks.max() <= 1
    silent_frame = (SR + SR // 2) // HOP
    np.testing.assert_allclose(masks[:, :, :, silent_frame], 0.5)


def test_irm_values_and_alpha_against_stft_by_hand(song):
    def spectrum(x):
        return torch.stft(torch.from_numpy(x), N_FFT, HOP, window=torch.hann_window(N_FFT),
                          center=True, pad_mode="reflect", return_complex=True).abs()
    mags = spectrum(song[:, 0])
    irm2 = oracle_masks(song, "irm2", n_fft=N_FFT, hop_length=HOP)[:, 0]
    power = (mags ** 2).numpy()
    total = power.sum(0)
    expected = np.where(total > 0, power / np.where(total > 0, total, 1), 0.5)
    assert (total == 0).any()  # speech has digital silence: those bins are shared equally
    np.testing.assert_allclose(irm2, expected, atol=1e-4)
    np.testing.assert_allclose(oracle_masks(song, "irm2", N_FFT, HOP, alpha=1.0),
                               oracle_masks(song, "irm1", N_FFT, HOP), atol=1e-6)


def test_ibm_is_one_hot_on_the_loudest_source(song):
    masks = oracle_masks(song, "ibm", n_fft=N_FFT, hop_length=HOP)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(masks.sum(0), 1.0)
    irm2 = oracle_masks(song, "irm2", n_fft=N_FFT, hop_length=HOP)
    np.testing.assert_array_equal(masks[0] == 1, irm2[0] >= irm2[1])


def test_bad_mask_arguments():
    stems = np.zeros((2, 1, 4096), np.float32)
    with pytest.raises(ValueError, match="kind='irm3'"):
        oracle_masks(stems, "irm3")
    with pytest.raises(ValueError, match="kind='ibm' is binary"):
        oracle_masks(stems, "ibm", alpha=2.0)
    with pytest.raises(AudioError, match=r"expected \(sources, channels, samples\)"):
        oracle_masks(stems[:, 0])


# --------------------------------------------------------------------------- separation
@pytest.mark.parametrize("kind", ["irm1", "irm2", "ibm"])
def test_oracle_separation_of_sources_apart_in_frequency_is_near_perfect(kind):
    stems = np.stack([tones([220, 330, 550]), tones([3000, 4400, 6100])])[:, None]
    estimates = oracle_separation(stems, kind, n_fft=N_FFT, hop_length=HOP)
    assert estimates.shape == stems.shape and estimates.dtype == np.float32
    assert (sdr_fast(stems, estimates) > 40).all()


def test_irm2_beats_do_nothing_on_a_realistic_mix(song):
    estimates = oracle_separation(song, "irm2", n_fft=N_FFT, hop_length=HOP)
    floor = do_nothing(song.sum(0), 2)
    oracle_scores = sdr(song, estimates, sr=SR, backend="direct")
    floor_scores = sdr(song, floor, sr=SR, backend="direct")
    assert (oracle_scores > floor_scores + 5).all()


def test_do_nothing_is_the_mixture_for_every_source():
    mixture = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    estimates = do_nothing(torch.from_numpy(mixture), 3)
    assert estimates.shape == (3, 2, 100)
    for estimate in estimates:
        np.testing.assert_array_equal(estimate, mixture)
    with pytest.raises(AudioError, match=r"expected \(channels, samples\)"):
        do_nothing(mixture[0], 2)


def test_targets_for_sums_the_accompaniment():
    stems = np.random.default_rng(0).standard_normal((4, 2, 50)).astype(np.float32)
    targets = targets_for(stems)
    np.testing.assert_array_equal(targets[0], stems[0])
    np.testing.assert_allclose(targets[1], stems[1] + stems[2] + stems[3], atol=1e-6)
    np.testing.assert_array_equal(targets_for(stems, ("bass",))[0], stems[2])
    with pytest.raises(AudioError, match="expected \\(4, channels, samples\\)"):
        targets_for(stems[:3])


# --------------------------------------------------------------------------- evaluation
def tracks(song, n=2):
    for i in range(n):
        yield f"track{i}", song.sum(0), song


def test_evaluate_tracks_never_gives_the_stems_to_a_model(song):
    seen = []

    def model(*args, **kwargs):
        seen.append((len(args), kwargs))
        return np.stack([args[0], args[0]])

    def greedy_model(mixture, stems=None):  # would cheat if it were given the stems
        seen.append(stems)
        return stems if stems is not None else np.stack([mixture, mixture])

    greedy_model.uses_reference = "yes"  # only the literal True marks an oracle
    for estimator in (model, greedy_model):
        result = evaluate_tracks(tracks(song), estimator, metric="snr", progress=False)
        assert result["oracle"] is False
    assert seen == [(1, {}), (1, {}), None, None]


def test_evaluate_tracks_gives_the_stems_to_an_oracle(song):
    cheat = Oracle(lambda mixture, stems: stems, name="perfect")
    result = evaluate_tracks(tracks(song), cheat, metric="si_sdr", progress=False)
    assert result["oracle"] is True
    assert all(v > 100 for v in result["median"].values())
    ideal = evaluate_tracks(tracks(song[..., :SR], 1), oracle("irm2", N_FFT, HOP), metric="sdr",
                            sr=SR, progress=False)  # museval: kept to 1 s
    assert set(ideal["per_track"]) == {"track0"}
    assert list(ideal["median"]) == ["vocals", "accompaniment"]
    json.dumps(ideal)


def test_evaluate_tracks_checks_the_estimates_shape(song):
    with pytest.raises(LabkitError, match="track 'track0'.*returned shape \\(2, 48000\\)"):
        evaluate_tracks(tracks(song), lambda mixture: mixture, metric="snr", progress=False)
    with pytest.raises(ValueError, match="metric='pesq'"):
        evaluate_tracks(tracks(song), lambda mixture: mixture, metric="pesq")


# --------------------------------------------------------------------------- report
RESULTS = {
    "IRM2 oracle": {"vocals": 10.0, "accompaniment": 20.0},
    "do-nothing": {"vocals": 0.0, "accompaniment": 10.0},
    "model": {"vocals": 5.0, "accompaniment": 15.0},
}


def test_report_data_fractions():
    data = report_data(RESULTS)
    model = data["methods"]["model"]
    assert model["scores"]["mean"] == 10.0
    assert model["fraction_of_reference"]["mean"] == pytest.approx(10 / 15)
    assert model["fraction_of_reference"]["vocals"] == pytest.approx(0.5)
    assert model["gap_closed"]["mean"] == pytest.approx(0.5)
    assert data["methods"]["do-nothing"]["gap_closed"]["vocals"] == 0.0
    assert data["methods"]["IRM2 oracle"]["oracle"] is True
    assert data["methods"]["model"]["oracle"] is False
    assert json.loads(json.dumps(data)) == data


def test_separation_report_table():
    table = separation_report(RESULTS, metric_name="SDR (fast-bss-eval, whole signal)")
    lines = table.splitlines()
    assert lines[0].startswith("**SDR (fast-bss-eval, whole signal)**")
    assert lines[2] == "| method | vocals | accompaniment | mean | × oracle | gap closed |"
    assert "| model | 5.00 | 15.00 | 10.00 | 0.67 | 50 % |" in lines
    assert "| IRM2 oracle | 10.00 | 20.00 | 15.00 | 1.00 | 100 % |" in lines
    # the structured form round-trips through JSON into the same table
    data = json.loads(json.dumps(report_data(RESULTS, metric_name="SDR (fast-bss-eval, "
                                                                  "whole signal)")))
    assert separation_report(data) == table


def test_report_without_reference_and_with_missing_values():
    table = separation_report({"model": {"vocals": 1.0, "accompaniment": math.nan}})
    assert "| model | 1.00 | – | 1.00 | – | – |" in table


def test_oracle_results_must_be_labelled(song):
    result = evaluate_tracks(tracks(song, 1), Oracle(lambda m, s: s), metric="snr",
                             progress=False)
    with pytest.raises(LabkitError, match="must say 'oracle'"):
        report_data({"my model": result})
    assert report_data({"perfect oracle": result})["methods"]["perfect oracle"]["oracle"]


# ------------------------------------------------------------------ sample-mask oracle, other rates
def test_sample_mask_oracle_known_answers():
    # sample 0: same signs (exact); 1: opposite signs (the negative source cannot be made);
    # 2: a silent mixture (nothing to mask)
    stems = np.array([[[0.2, 0.5, 0.3]], [[0.6, -0.25, -0.3]]], dtype=np.float32)
    estimate = sample_mask_oracle(stems)
    assert estimate.shape == stems.shape and estimate.dtype == np.float32
    np.testing.assert_allclose(estimate[:, 0, 0], [0.2, 0.6], atol=1e-7)
    np.testing.assert_allclose(estimate[:, 0, 1], [0.25, 0.0], atol=1e-7)  # mask 1 and 0
    np.testing.assert_allclose(estimate[:, 0, 2], [0.0, 0.0], atol=1e-7)
    with pytest.raises(AudioError, match="expected \\(sources, channels, samples\\)"):
        sample_mask_oracle(stems[0])


def test_oracle_separation_at_the_same_rate_is_oracle_separation(song):
    same = oracle_separation_at(song, SR, SR, n_fft=N_FFT, hop_length=HOP)
    np.testing.assert_allclose(same, oracle_separation(song, n_fft=N_FFT, hop_length=HOP),
                               atol=1e-6)


def test_oracle_separation_at_half_rate_loses_the_top_band(song):
    half = oracle_separation_at(song, SR, SR // 2, n_fft=N_FFT // 2, hop_length=HOP // 2)
    assert half.shape == song.shape and half.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(half.sum(0)[0]))
    freqs = np.fft.rfftfreq(half.shape[-1], 1 / SR)
    top = spectrum[freqs > 0.55 * SR / 2].max()
    assert top < 1e-3 * spectrum.max()  # nothing above the lower rate's Nyquist
    # in the band both rates keep, it is still a good oracle
    assert np.mean(sdr_fast(song, half)) > 5.0
