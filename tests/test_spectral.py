"""labkit.spectral against librosa/scipy, reconstruction, overlap-add and Griffin-Lim."""
from __future__ import annotations

import itertools
import math
import warnings

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from labkit import spectral
from labkit.errors import LabkitError


def noise(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def harmonic(sr=22050, seconds=1.0, f0=220.0):
    t = np.arange(round(sr * seconds)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))).astype(np.float32)


def rel_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).max() / np.abs(b).max()


# --------------------------------------------------------------------------- windows, frames
@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", "boxcar"])
@pytest.mark.parametrize("periodic", [True, False])
def test_windows_match_scipy(name, periodic):
    ours = spectral.get_window(name, 512, periodic=periodic, dtype=torch.float64)
    np.testing.assert_allclose(ours.numpy(), scipy.signal.get_window(name, 512, fftbins=periodic),
                               atol=1e-12)
    assert spectral.get_window(name, 512).dtype == torch.float32


def test_sine_window_is_the_root_of_hann_and_the_mdct_window():
    n = 256
    periodic = spectral.get_window("sine", n, dtype=torch.float64)
    torch.testing.assert_close(periodic ** 2, spectral.get_window("hann", n, dtype=torch.float64))
    symmetric = spectral.get_window("sine", n, periodic=False, dtype=torch.float64)
    np.testing.assert_allclose(symmetric.numpy(), scipy.signal.windows.cosine(n), atol=1e-12)


def test_unknown_window_lists_the_names():
    with pytest.raises(LabkitError, match=r"window 'kaiser' is not known; use one of hann, "
                                          r"hamming, blackman, rectangular"):
        spectral.get_window("kaiser", 64)


def test_frame_matches_librosa_and_pads():
    x = noise((2, 1000))
    frames = spectral.frame(x, 256, 100)
    expected = librosa.util.frame(x, frame_length=256, hop_length=100, axis=-1)
    assert frames.shape == (2, 8, 256)
    np.testing.assert_array_equal(frames.numpy(), np.swapaxes(expected, -1, -2))
    padded = spectral.frame(x, 256, 100, pad=True)
    assert padded.shape == (2, 9, 256)  # 8 * 100 + 256 >= 1000 covers every sample
    np.testing.assert_array_equal(padded[:, -1, :200].numpy(), x[:, 800:])
    assert not padded[:, -1, 200:].any()
    with pytest.raises(LabkitError, match="x has 100 samples, fewer than frame_length=256"):
        spectral.frame(x[:, :100], 256, 64)


# --------------------------------------------------------------------------- STFT
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize(("n_fft", "hop", "win_length", "window"), [
    (1024, 256, None, "hann"), (512, 128, 400, "hamming"), (2048, 512, None, "blackman"),
])
def test_stft_matches_librosa(pad_mode, n_fft, hop, win_length, window):
    y = noise(22050)
    ours = spectral.stft(y, n_fft, hop, win_length, window, center=True, pad_mode=pad_mode)
    ref = librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=win_length, window=window,
                       center=True, pad_mode=pad_mode)
    assert ours.shape == ref.shape == (n_fft // 2 + 1, 1 + 22050 // hop)
    assert rel_error(ours.numpy(), ref) < 1e-12
    ours32 = spectral.stft(y.astype(np.float32), n_fft, hop, win_length, window,
                           pad_mode=pad_mode)
    assert ours32.dtype == torch.complex64 and rel_error(ours32.numpy(), ref) < 1e-5


def test_stft_without_centering_matches_librosa():
    y = noise(5000)
    ours = spectral.stft(y, 512, 128, center=False)
    ref = librosa.stft(y, n_fft=512, hop_length=128, center=False)
    assert ours.shape == ref.shape and rel_error(ours.numpy(), ref) < 1e-12


def test_stft_batches_anywhere_in_front():
    x = torch.from_numpy(noise((2, 3, 4000), dtype=np.float32))
    batched = spectral.stft(x, 512, 128)
    assert batched.shape == (2, 3, 257, 1 + 4000 // 128)
    torch.testing.assert_close(batched[1, 2], spectral.stft(x[1, 2], 512, 128))


def test_numpy_and_torch_inputs_agree():
    x = noise((2, 4000), dtype=np.float32)
    from_numpy = spectral.stft(x[:, ::-1], 512, 128)  # a negative-stride view is fine too
    from_torch = spectral.stft(torch.from_numpy(x[:, ::-1].copy()), 512, 128)
    assert isinstance(from_numpy, torch.Tensor)
    torch.testing.assert_close(from_numpy, from_torch, rtol=0, atol=0)
    torch.testing.assert_close(spectral.mel_spectrogram(x, 16000, 512, 128, n_mels=40),
                               spectral.mel_spectrogram(torch.from_numpy(x), 16000, 512, 128,
                                                        n_mels=40), rtol=0, atol=0)


def test_istft_matches_librosa():
    rng = np.random.default_rng(1)
    spec = rng.standard_normal((513, 40)) + 1j * rng.standard_normal((513, 40))
    ours = spectral.istft(spec, 1024, 256)
    ref = librosa.istft(spec, n_fft=1024, hop_length=256)
    assert ours.shape == ref.shape and rel_error(ours.numpy(), ref) < 1e-10


@pytest.mark.parametrize("hop", [256, 512])
@pytest.mark.parametrize("window", ["hann", "hamming", "sine"])
def test_perfect_reconstruction(hop, window):
    x = torch.from_numpy(noise((2, 2, 10000), dtype=np.float32))
    X = spectral.stft(x, 1024, hop, window=window)
    y = spectral.istft(X, 1024, hop, window=window, length=x.shape[-1])
    assert y.shape == x.shape
    assert (y - x).abs().max() < 1e-5


def test_stft_errors_are_specific():
    with pytest.raises(LabkitError, match=r"x has 300 samples; reflect padding needs more than "
                                          r"n_fft // 2 = 512"):
        spectral.stft(np.zeros(300), 1024, 256)
    assert spectral.stft(np.zeros(300), 1024, 256, pad_mode="constant").shape == (513, 2)
    with pytest.raises(LabkitError, match=r"X has shape \(257, 10\); expected \(\.\.\., 513, "):
        spectral.istft(torch.zeros(257, 10, dtype=torch.complex64), 1024, 256)
    with pytest.raises(LabkitError, match="X is real"):
        spectral.istft(torch.zeros(513, 10), 1024, 256)
    with pytest.raises(LabkitError, match="window has shape \\(512,\\); expected \\(1024,\\)"):
        spectral.stft(np.zeros(4096), 1024, 256, window=np.ones(512))
    X = spectral.stft(np.zeros(8192), 1024, 1024, center=False)
    with pytest.raises(LabkitError, match="overlap-add envelope vanishes .*hop_length=1024"):
        spectral.istft(X, 1024, 1024, center=False)  # Hann at hop n_fft: zero between frames
    with pytest.raises(LabkitError, match="hop_length=1024 is longer than the window .512."):
        spectral.istft(X, 1024, 1024, win_length=512, center=False)


# --------------------------------------------------------------------------- overlap-add
def test_cola_deviation_known_values():
    assert spectral.cola_deviation("hann", 1024, 256) < 1e-12
    # Hann squared at hop n/2 ripples between 0.5 and 1 around a mean of 0.75: (1 - 0.5) / 0.75.
    assert spectral.cola_deviation("hann", 1024, 512) == pytest.approx(2 / 3, rel=1e-12)
    assert spectral.cola_deviation("hann", 1024, 512, power=1) < 1e-12  # plain COLA holds
    assert spectral.cola_deviation("sine", 1024, 512) < 1e-12
    assert spectral.cola_deviation("rectangular", 1024, 256) == 0.0
    # At hop 300 a sample is covered by 3 or 4 frames (mean 1024/300): ripple 1 / (1024/300).
    assert spectral.cola_deviation("rectangular", 1024, 300) == pytest.approx(300 / 1024)
    assert spectral.cola_deviation("hamming", 1024, 256) < 1e-12  # squared: terms up to cos 2x
    assert spectral.cola_deviation("hamming", 1024, 512) > 0.1


def test_overlap_add_envelope():
    env = spectral.overlap_add_envelope("hann", 256, 10, n_fft=1024)
    assert env.shape == (1024 + 9 * 256,)
    torch.testing.assert_close(env[1024:9 * 256], torch.full((9 * 256 - 1024,), 1.5,
                                                            dtype=torch.float64))
    w = spectral.get_window("hann", 1024, dtype=torch.float64)
    torch.testing.assert_close(env[:256], w[:256] ** 2)  # only the first frame reaches there
    with pytest.raises(LabkitError, match="pass n_fft"):
        spectral.overlap_add_envelope("hann", 256, 10)


# --------------------------------------------------------------------------- magnitude and dB
def test_magnitude_phase_polar_round_trip():
    X = spectral.stft(noise(4096), 512, 128)
    torch.testing.assert_close(spectral.polar(spectral.magnitude(X), spectral.phase(X)), X)
    torch.testing.assert_close(spectral.magnitude(X, power=2), X.abs() ** 2)


@pytest.mark.parametrize(("ref", "librosa_ref", "top_db"), [
    (1.0, 1.0, 80.0), ("max", np.max, 80.0), ("max", np.max, None), (0.5, 0.5, 40.0),
])
def test_amplitude_and_power_to_db_match_librosa(ref, librosa_ref, top_db):
    mag = np.abs(librosa.stft(noise(8000) * np.linspace(0, 1, 8000), n_fft=512))
    ours = spectral.amplitude_to_db(mag, ref=ref, top_db=top_db)
    np.testing.assert_allclose(ours.numpy(),
                               librosa.amplitude_to_db(mag, ref=librosa_ref, top_db=top_db),
                               atol=1e-9)
    power_ref = ref if isinstance(ref, str) else ref ** 2
    np.testing.assert_allclose(
        spectral.power_to_db(mag ** 2, ref=power_ref, top_db=top_db).numpy(),
        librosa.power_to_db(mag ** 2, ref=librosa_ref if callable(librosa_ref) else power_ref,
                            top_db=top_db), atol=1e-9)


def test_db_reductions_act_per_spectrogram_and_silence_is_finite():
    a = 0.5 + np.abs(noise((257, 20)))  # well above amin after scaling by 0.01
    batch = torch.from_numpy(np.stack([a, 0.01 * a]))
    out = spectral.amplitude_to_db(batch, ref="max")
    torch.testing.assert_close(out[1], spectral.amplitude_to_db(batch[1], ref="max"))
    torch.testing.assert_close(out[0], out[1])  # scaled copies look the same relative to max
    silent = spectral.amplitude_to_db(torch.zeros(2, 257, 20), ref="max")
    assert torch.isfinite(silent).all() and (silent == 0).all()
    assert (spectral.amplitude_to_db(torch.zeros(257, 20)) == -100).all()


# --------------------------------------------------------------------------- mel
@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_matches_librosa(htk):
    freqs = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 11025.0])
    np.testing.assert_allclose(spectral.hz_to_mel(freqs, htk=htk),
                               librosa.hz_to_mel(freqs, htk=htk), rtol=1e-12)
    mels = spectral.hz_to_mel(torch.from_numpy(freqs), htk=htk)
    assert isinstance(mels, torch.Tensor)
    np.testing.assert_allclose(spectral.mel_to_hz(mels, htk=htk).numpy(), freqs, rtol=1e-10)
    assert spectral.hz_to_mel(1000.0) == pytest.approx(15.0)


@pytest.mark.parametrize("kwargs", [
    {"sr": 22050, "n_fft": 2048},
    {"sr": 44100, "n_fft": 4096, "n_mels": 80, "fmin": 30.0, "fmax": 16000.0},
    {"sr": 16000, "n_fft": 512, "n_mels": 40, "htk": True, "norm": None},
    {"sr": 16000, "n_fft": 1024, "n_mels": 64, "norm": 2.0},
])
def test_mel_filterbank_matches_librosa(kwargs):
    ours = spectral.mel_filterbank(**kwargs)
    ref = librosa.filters.mel(**kwargs)
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-7)


def test_mel_filterbank_warns_about_empty_filters():
    with pytest.warns(UserWarning, match="mel filters are empty"):
        spectral.mel_filterbank(16000, 256, n_mels=128)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_mel_spectrogram_matches_librosa(pad_mode):
    y = harmonic() + 0.01 * noise(22050, dtype=np.float32)
    ours = spectral.mel_spectrogram(y, 22050, pad_mode=pad_mode)
    ref = librosa.feature.melspectrogram(y=y, sr=22050, pad_mode=pad_mode)
    assert ours.shape == ref.shape == (128, 1 + 22050 // 512)
    assert rel_error(ours.numpy(), ref) < 1e-5
    batched = spectral.mel_spectrogram(np.stack([y, 0.5 * y]), 22050, n_mels=64, power=1.0,
                                       pad_mode=pad_mode)
    one = librosa.feature.melspectrogram(y=0.5 * y, sr=22050, n_mels=64, power=1.0,
                                         pad_mode=pad_mode)
    assert rel_error(batched[1].numpy(), one) < 1e-5


def test_mel_spectrogram_default_padding_differs_from_librosa_only_at_the_edges():
    y = harmonic()
    ours = spectral.mel_spectrogram(y, 22050).numpy()
    ref = librosa.feature.melspectrogram(y=y, sr=22050)  # librosa 0.11 pads with zeros
    assert rel_error(ours[:, 2:-2], ref[:, 2:-2]) < 1e-5
    assert rel_error(ours[:, :1], ref[:, :1]) > 1e-2


# --------------------------------------------------------------------------- Griffin-Lim
def test_spectral_convergence_known_values():
    t = torch.ones(3, 4)
    assert spectral.spectral_convergence(t, t) == 0.0
    assert spectral.spectral_convergence(t, 1.1 * t) == pytest.approx(0.1)
    assert spectral.spectral_convergence(t, torch.zeros(3, 4)) == 1.0
    assert spectral.spectral_convergence(torch.zeros(3, 4), torch.zeros(3, 4)) == 0.0
    assert spectral.spectral_convergence(torch.zeros(3, 4), t) == math.inf


def test_griffin_lim_converges_on_a_harmonic_signal():
    y = harmonic()
    mag = spectral.magnitude(spectral.stft(y, 1024, 256))
    wave, history = spectral.griffin_lim(mag, n_iter=32, return_history=True, length=y.size)
    assert wave.shape == (y.size,) and len(history) == 33
    assert history[-1] < 0.2 * history[0]
    assert history[-1] < history[8] < history[1]
    steps_down = sum(b < a for a, b in itertools.pairwise(history))
    assert steps_down >= 0.8 * (len(history) - 1)
    # the history's last value is the returned waveform's spectral convergence
    again = spectral.magnitude(spectral.stft(wave, 1024, 256))
    assert spectral.spectral_convergence(mag, again) == pytest.approx(history[-1], rel=1e-3)
    # momentum (fast Griffin-Lim) beats the original algorithm at the same iteration count
    _, slow = spectral.griffin_lim(mag, n_iter=32, momentum=0.0, return_history=True)
    assert history[-1] < slow[-1]


def test_griffin_lim_matches_librosa_from_zero_phase():
    y = harmonic().astype(np.float64)
    mag = np.abs(librosa.stft(y, n_fft=512, hop_length=128, pad_mode="reflect"))
    ours = spectral.griffin_lim(mag, n_iter=8, init="zeros")
    ref = librosa.griffinlim(mag, n_iter=8, hop_length=128, n_fft=512, pad_mode="reflect",
                             init=None, momentum=0.99)
    assert ours.shape == ref.shape and rel_error(ours.numpy(), ref) < 1e-8


def test_griffin_lim_batches_and_true_phase_init():
    y = harmonic()
    X = spectral.stft(np.stack([y, 0.5 * y[::-1].copy()]), 512, 128)
    mag = spectral.magnitude(X)
    batched = spectral.griffin_lim(mag, n_iter=4, init="zeros")
    torch.testing.assert_close(batched[1], spectral.griffin_lim(mag[1], n_iter=4, init="zeros"))
    _, history = spectral.griffin_lim(mag, n_iter=2, init=spectral.phase(X), length=y.size,
                                      return_history=True)
    assert history[0] < 1e-5  # the true phase is already consistent
    _, history = spectral.griffin_lim(mag, n_iter=2, init=spectral.phase(X), return_history=True)
    assert history[0] > 1e-3  # without the length the last frames are cut short and disagree
    with pytest.raises(LabkitError, match="length=1000 gives 8 frames .* mag has 173"):
        spectral.griffin_lim(mag, length=1000)
    with pytest.raises(LabkitError, match="mag has 257 bins but n_fft=1024 makes 513"):
        spectral.griffin_lim(mag, n_fft=1024)
    with pytest.raises(LabkitError, match="init='noise'"):
        spectral.griffin_lim(mag, init="noise")


def test_griffin_lim_is_repeatable_from_its_seed():
    mag = spectral.magnitude(spectral.stft(harmonic(), 512, 128))
    a = spectral.griffin_lim(mag, n_iter=3, seed=1)
    torch.testing.assert_close(a, spectral.griffin_lim(mag, n_iter=3, seed=1))
    assert not torch.allclose(a, spectral.griffin_lim(mag, n_iter=3, seed=2))


def test_griffin_lim_of_silence_is_silence():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wave, history = spectral.griffin_lim(torch.zeros(2, 513, 30), n_iter=3,
                                             return_history=True)
    assert wave.shape == (2, 256 * 29) and torch.isfinite(wave).all() and not wave.any()
    assert history == [0.0] * 4
