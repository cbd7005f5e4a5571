"""Tests for labkit.signals: frequencies where they should be, determinism, shapes, levels."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import chirp as scipy_chirp

from labkit import signals
from labkit.errors import LabkitError

SR = 16000


def spectrum(x: np.ndarray, sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) and Hann-windowed magnitude spectrum of a 1-D signal."""
    mag = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1.0 / sr), mag


def peak_frequency(x: np.ndarray, sr: int = SR, low: float = 0.0, high: float | None = None):
    freqs, mag = spectrum(x, sr)
    band = (freqs >= low) & (freqs <= (high if high is not None else sr / 2))
    return freqs[band][np.argmax(mag[band])]


def band_energy(x: np.ndarray, low: float, high: float, sr: int = SR) -> float:
    freqs, mag = spectrum(x, sr)
    return float(np.sum(mag[(freqs >= low) & (freqs < high)] ** 2))


# --------------------------------------------------------------------------- building blocks
def test_sine_frequency_level_phase_and_dtype():
    x = signals.sine(440.0, 0.5, SR, amplitude=0.3, phase=np.pi / 2)
    assert x.shape == (8000,) and x.dtype == np.float32
    assert peak_frequency(x) == pytest.approx(440.0, abs=2.0)
    assert np.abs(x).max() == pytest.approx(0.3, rel=1e-3)
    assert x[0] == pytest.approx(0.3)  # sin(π/2) = 1


def test_sine_rejects_frequencies_above_nyquist_with_the_limit_in_the_message():
    with pytest.raises(LabkitError, match=r"freq=9000.0 Hz.*\[0, 8000\] Hz"):
        signals.sine(9000.0, 0.1, SR)
    with pytest.raises(LabkitError, match="duration"):
        signals.sine(100.0, 0.0, SR)
    with pytest.raises(LabkitError, match="sample rate"):
        signals.sine(100.0, 1.0, 0)


@pytest.mark.parametrize("method, scipy_method", [("linear", "linear"), ("log", "logarithmic")])
def test_chirp_matches_scipy(method, scipy_method):
    x = signals.chirp(100.0, 4000.0, 1.0, SR, amplitude=1.0, method=method)
    t = np.arange(SR) / SR
    # scipy's chirp is a cosine; phi=-90 degrees turns it into our sine
    reference = scipy_chirp(t, 100.0, 1.0, 4000.0, method=scipy_method, phi=-90)
    np.testing.assert_allclose(x, reference, atol=2e-4)


@pytest.mark.parametrize("method", ["linear", "log"])
def test_chirp_instantaneous_frequency_follows_chirp_frequency(method):
    f0, f1, duration = 200.0, 3000.0, 2.0
    x = signals.chirp(f0, f1, duration, SR, method=method)
    for t in (0.5, 1.0, 1.5):
        segment = x[int(t * SR) - 512:int(t * SR) + 512]
        expected = float(signals.chirp_frequency(t, f0, f1, duration, method))
        # a 64 ms segment of a sweep spans a few tens of Hz; bins are 15.6 Hz wide
        assert peak_frequency(segment) == pytest.approx(expected, rel=0.05)


def test_chirp_rejects_unknown_method_and_nonpositive_log_start():
    with pytest.raises(LabkitError, match="'linear' or 'log'"):
        signals.chirp(100, 200, 0.1, SR, method="cubic")
    with pytest.raises(LabkitError, match="above 0 Hz"):
        signals.chirp(0, 200, 0.1, SR, method="log")


def test_harmonic_tone_has_harmonics_with_the_requested_rolloff():
    f0, rolloff = 250.0, 1.0
    x = signals.harmonic_tone(f0, 1.0, SR, n_harmonics=5, rolloff=rolloff, amplitude=0.7)
    assert x.dtype == np.float32 and np.abs(x).max() == pytest.approx(0.7, rel=1e-4)
    freqs, mag = spectrum(x)
    bins = [int(np.argmin(np.abs(freqs - k * f0))) for k in range(1, 6)]
    ratios = mag[bins] / mag[bins[0]]
    np.testing.assert_allclose(ratios, np.arange(1, 6) ** -rolloff, rtol=0.01)
    # nothing outside the five harmonics (above the window's sidelobes)
    mask = np.ones_like(mag, dtype=bool)
    for b in bins:
        mask[b - 3:b + 4] = False
    assert mag[mask].max() < 1e-3 * mag[bins[0]]


def test_harmonic_tone_drops_harmonics_above_nyquist():
    x = signals.harmonic_tone(3000.0, 0.5, SR, n_harmonics=10, rolloff=0.0)
    # harmonics 1 and 2 (3 and 6 kHz) fit below 8 kHz; 9 kHz would alias to 7 kHz
    assert band_energy(x, 6500, 8000) < 1e-6 * band_energy(x, 2500, 3500)


def test_harmonic_tone_envelope_must_match_length():
    with pytest.raises(LabkitError, match=r"envelope has shape \(10,\), expected \(1600,\)"):
        signals.harmonic_tone(200.0, 0.1, SR, envelope=np.ones(10))


def test_midi_to_hz_known_values():
    assert signals.midi_to_hz(69) == pytest.approx(440.0)
    np.testing.assert_allclose(signals.midi_to_hz([57, 60, 81]), [220.0, 261.6256, 880.0],
                               rtol=1e-6)


def test_chord_contains_each_fundamental():
    notes = signals.midi_to_hz([60, 64, 67])
    x = signals.chord(notes, 1.0, SR, n_harmonics=1, amplitude=0.5)
    assert np.abs(x).max() == pytest.approx(0.5, rel=1e-4)
    freqs, mag = spectrum(x)
    top3 = np.sort(freqs[np.argsort(mag)[-30:]])  # the strongest bins cluster at the notes
    for f in notes:
        assert np.min(np.abs(top3 - f)) < 2.0
    with pytest.raises(LabkitError, match="freqs is empty"):
        signals.chord([], 1.0, SR)


def test_click_train_positions_and_flat_spectrum():
    x = signals.click_train(10.0, 1.0, SR, amplitude=0.9, offset=0.05)
    positions = signals.click_positions(10.0, 1.0, SR, offset=0.05)
    np.testing.assert_array_equal(np.flatnonzero(x), positions)
    np.testing.assert_array_equal(positions, 800 + 1600 * np.arange(10))
    assert np.all(x[positions] == np.float32(0.9))
    one = np.abs(np.fft.rfft(x[:1600]))  # a single click: flat magnitude spectrum
    np.testing.assert_allclose(one, 0.9, rtol=1e-5)


def test_noise_burst_is_confined_deterministic_and_highpassed():
    kwargs = {"duration": 1.0, "sr": SR, "start": 0.25, "length": 0.5, "amplitude": 0.4}
    x = signals.noise_burst(seed=3, **kwargs)
    np.testing.assert_array_equal(x, signals.noise_burst(seed=3, **kwargs))
    assert not np.array_equal(x, signals.noise_burst(seed=4, **kwargs))
    assert np.all(x[:4000] == 0) and np.all(x[12000:] == 0)
    assert np.abs(x).max() == pytest.approx(0.4, rel=1e-4)
    hp = signals.noise_burst(seed=3, highpass=4000.0, **kwargs)
    # fades leak a little energy below the cut-off; the bulk must be above it
    assert band_energy(hp, 0, 3500) < 1e-3 * band_energy(hp, 4000, 8000)
    with pytest.raises(LabkitError, match="must lie inside"):
        signals.noise_burst(1.0, SR, start=0.9, length=0.5)


def test_fade_ramps_ends_and_keeps_the_middle():
    x = np.ones((2, 1000), dtype=np.float32)
    y = signals.fade(x, 1000, fade_in=0.1, fade_out=0.2)
    assert y.shape == x.shape and y.dtype == np.float32
    assert y[0, 0] < 0.001 and y[0, -1] < 0.001
    np.testing.assert_array_equal(y[:, 100:800], 1.0)
    assert np.all(np.diff(y[0, :100]) > 0) and np.all(np.diff(y[0, 800:]) < 0)


def test_adsr_levels():
    env = signals.adsr(1000, 1000, attack=0.1, decay=0.1, sustain=0.5, release=0.2)
    assert env.shape == (1000,) and env.max() == pytest.approx(1.0, abs=0.011)
    np.testing.assert_allclose(env[200:800], 0.5)
    assert env[-1] == 0.0 and env[0] == 0.0
    with pytest.raises(LabkitError, match="sustain"):
        signals.adsr(100, 1000, sustain=2.0)


@pytest.mark.parametrize("name", sorted(signals.VOWEL_FORMANTS))
def test_vowel_has_its_pitch_and_its_formants(name):
    f0 = 110.0
    x = signals.vowel(f0, 1.0, SR, formants=name, amplitude=0.6)
    assert x.shape == (SR,) and x.dtype == np.float32
    assert np.abs(x).max() == pytest.approx(0.6, rel=1e-4)
    freqs, mag = spectrum(x)
    harmonics = np.arange(1, int(7000 // f0)) * f0
    levels = np.array([mag[np.argmin(np.abs(freqs - h))] for h in harmonics])
    # the lowest harmonic is at f0
    assert peak_frequency(x, low=50, high=160) == pytest.approx(f0, abs=2.0)
    # the source-filter model exactly: harmonic k at level formant_envelope(k f0) / k
    expected = signals.formant_envelope(harmonics, signals.VOWEL_FORMANTS[name]) / np.arange(
        1, harmonics.size + 1)
    np.testing.assert_allclose(levels / levels.max(), expected / expected.max(), atol=0.01)
    for formant in signals.VOWEL_FORMANTS[name]:
        near = np.abs(harmonics - formant) < 1.5 * f0
        loudest = harmonics[near][np.argmax(levels[near])]
        # the loudest harmonic near a formant is one of the two that straddle it
        assert abs(loudest - formant) <= f0, (name, formant, loudest)


def test_vowel_formants_stay_when_pitch_changes():
    low = signals.vowel(100.0, 1.0, SR, formants="i")
    high = signals.vowel(160.0, 1.0, SR, formants="i")
    for x in (low, high):  # F2 of "i" (2290 Hz) dominates its neighbourhood at both pitches
        assert band_energy(x, 2100, 2500) > 3 * band_energy(x, 1500, 1900)


def test_vowel_vibrato_and_glide_move_the_pitch():
    x = signals.vowel(100.0, 1.0, SR, formants="a", f0_end=150.0)
    assert peak_frequency(x[:2000], low=60, high=200) < peak_frequency(x[-3000:-1000],
                                                                         low=60, high=200)
    with pytest.raises(LabkitError, match="formants='y'"):
        signals.vowel(100.0, 0.1, SR, formants="y")
    with pytest.raises(LabkitError, match="f0_end"):
        signals.vowel(100.0, 0.1, SR, f0_end=9000.0)


def test_formant_envelope_peaks_at_formants():
    f = np.arange(0, 4000, 1.0)
    env = signals.formant_envelope(f, (500.0, 1500.0), (80.0, 100.0))
    local_max = f[1:-1][(env[1:-1] > env[:-2]) & (env[1:-1] > env[2:])]
    np.testing.assert_allclose(local_max, [500.0, 1500.0], atol=2.0)


# --------------------------------------------------------------------------- example clips
@pytest.mark.parametrize("make, sr", [(signals.speech_like, 16000), (signals.music_like, 22050)])
def test_clips_are_deterministic_float32_channels_first_at_peak(make, sr):
    a = make(duration=1.5, sr=sr, seed=1)
    assert a.shape == (1, int(1.5 * sr)) and a.dtype == np.float32
    assert np.abs(a).max() == pytest.approx(0.8, rel=1e-5)
    np.testing.assert_array_equal(a, make(duration=1.5, sr=sr, seed=1))
    assert not np.array_equal(a, make(duration=1.5, sr=sr, seed=2))
    stereo = make(duration=1.5, sr=sr, seed=1, channels=2, peak=0.5)
    assert stereo.shape == (2, int(1.5 * sr))
    assert np.abs(stereo).max() == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(LabkitError, match="peak"):
        make(duration=1.0, sr=sr, peak=1.5)
    with pytest.raises(LabkitError, match="channels"):
        make(duration=1.0, sr=sr, channels=0)


def test_speech_like_has_pauses_a_speech_pitch_and_hiss():
    x = signals.speech_like(duration=2.0, sr=SR, seed=0)[0]
    frames = x[: x.size // 320 * 320].reshape(-1, 320)  # 20 ms frames
    rms = np.sqrt(np.mean(frames**2, axis=1))
    assert np.mean(rms < 1e-3 * rms.max()) > 0.05  # there are silent gaps
    f0 = peak_frequency(x, low=60, high=200)
    assert 85.0 <= f0 <= 160.0
    assert band_energy(x, 3000, 8000) > 1e-3 * band_energy(x, 0, 3000)  # consonant noise


def test_music_like_has_bass_hihat_and_a_stereo_image():
    sr = 22050
    x = signals.music_like(duration=2.0, sr=sr, seed=0, channels=2)
    mono = x.mean(axis=0)
    # the first chord (one second at 120 BPM): C major over a C2 bass (65.4 Hz), then G over G1
    assert peak_frequency(mono[:sr], sr, low=40, high=100) == pytest.approx(65.4, abs=1.5)
    assert peak_frequency(mono[sr:], sr, low=40, high=100) == pytest.approx(49.0, abs=1.5)
    # hi-hats live on the off-beats: more high-frequency energy there than on the beat
    beat = int(0.5 * sr)
    off = mono[beat // 2:beat // 2 + int(0.05 * sr)]
    on = mono[beat + int(0.1 * sr):beat + int(0.15 * sr)]
    assert band_energy(off, 7000, 11000, sr) > 10 * band_energy(on, 7000, 11000, sr)
    assert not np.allclose(x[0], x[1])
    speech = signals.speech_like(duration=1.0, channels=2)
    np.testing.assert_array_equal(speech[0], speech[1])
