"""labkit.audio: files round-trip, reads are partial, errors name the path, levels are right."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from labkit import audio
from labkit.errors import AudioError, LabkitError


def tone(freq: float, sr: int, seconds: float, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def music(sr: int = 44100, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Stereo low-passed noise plus a tone: content lossy codecs keep well."""
    rng = np.random.default_rng(seed)
    b, a = scipy.signal.butter(4, 3000 / (sr / 2))
    noise = scipy.signal.lfilter(b, a, rng.standard_normal((2, round(seconds * sr))), axis=-1)
    return (0.3 * noise + 0.3 * tone(440, sr, seconds)).astype(np.float32)


def dominant_frequency(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[-1])))
    return float(np.fft.rfftfreq(x.shape[-1], 1 / sr)[np.argmax(spectrum)])


def best_lag(decoded: np.ndarray, original: np.ndarray) -> int:
    corr = scipy.signal.correlate(decoded, original, mode="full")
    return int(scipy.signal.correlation_lags(len(decoded), len(original))[np.argmax(corr)])


# --------------------------------------------------------------------------- round trips
def test_wav_float_round_trip_is_exact(tmp_path):
    x = music()
    path = audio.save(tmp_path / "a.wav", x, 44100)
    y, sr = audio.load(path)
    assert sr == 44100 and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    assert audio.info(path).subtype == "FLOAT"


@pytest.mark.parametrize(("name", "subtype", "tolerance"), [
    ("a.wav", "PCM_16", 1 / 32768), ("a.flac", None, 2 ** -23), ("a.flac", "PCM_16", 1 / 32768),
    ("a.aiff", None, 0.0),
])
def test_lossless_round_trips_within_quantisation(tmp_path, name, subtype, tolerance):
    x = music()
    y, sr = audio.load(audio.save(tmp_path / name, x, 44100, subtype=subtype))
    assert sr == 44100 and y.shape == x.shape
    assert np.abs(y - x).max() <= tolerance


@pytest.mark.parametrize(("name", "sr"), [("a.ogg", 44100), ("a.opus", 48000), ("a.mp3", 44100),
                                          ("a.mp3", 16000)])
def test_lossy_round_trips_keep_length_and_waveform(tmp_path, name, sr):
    x = music(sr)
    y, got_sr = audio.load(audio.save(tmp_path / name, x, sr))
    assert got_sr == sr and y.shape == x.shape
    # libsndfile writes gapless information (MP3: a LAME/Xing header) and trims the encoder
    # delay on reading, so the decoded signal is aligned with the original.
    assert best_lag(y[0], x[0]) == 0
    for c in range(2):
        assert np.corrcoef(y[c], x[c])[0, 1] > 0.99


def test_low_rate_constant_bitrate_mp3_carries_the_encoder_delay(tmp_path):
    # Without gapless information the decoder returns the encoder delay and padding too: the
    # fact behind "remove the MP3 delay before measuring SNR" in notebook 04.
    sr = 16000
    x = music(sr)[0]
    path = audio.save(tmp_path / "cbr.mp3", x, sr, compression_level=0.9,
                      bitrate_mode="CONSTANT")
    y, _ = audio.load(path)
    lag = best_lag(y[0], x)
    assert y.shape[1] > x.size and 500 < lag < 2400
    assert np.corrcoef(y[0, lag:lag + x.size], x)[0, 1] > 0.95


def test_save_accepts_1d_and_torch_and_creates_folders(tmp_path):
    x = tone(440, 8000, 0.5, 0.5)
    path = audio.save(tmp_path / "deep" / "er" / "mono.wav", torch.from_numpy(x), 8000)
    y, sr = audio.load(path)
    assert y.shape == (1, x.size) and sr == 8000
    np.testing.assert_array_equal(y[0], x)
    assert sorted(p.name for p in path.parent.iterdir()) == ["mono.wav"]  # no temp file left


def test_save_failure_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = audio.save(tmp_path / "keep.wav", tone(440, 8000, 0.5, 0.5), 8000)
    before = path.read_bytes()

    def broken_write(self, data):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf.SoundFile, "write", broken_write)
    with pytest.raises(AudioError, match="keep.wav.*disk full"):
        audio.save(path, tone(220, 8000, 0.5, 0.5), 8000)
    with pytest.raises(AudioError, match="new.flac"):
        audio.save(tmp_path / "new.flac", tone(220, 8000, 0.5, 0.5), 8000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]
    assert path.read_bytes() == before


def test_save_rejects_rates_the_codec_cannot_store(tmp_path):
    x = tone(440, 44100, 0.5, 0.5)
    with pytest.raises(AudioError, match=r"x\.opus.*Opus stores only .*48000.*not 44100"):
        audio.save(tmp_path / "x.opus", x, 44100)
    with pytest.raises(AudioError, match=r"y\.mp3.*MP3 stores only.*not 96000"):
        audio.save(tmp_path / "y.mp3", tone(440, 96000, 0.2), 96000)
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_bad_names_subtypes_and_arrays(tmp_path):
    x = tone(440, 8000, 0.5, 0.5)
    with pytest.raises(AudioError, match=r"a\.xyz.*'\.xyz'.*\.wav, \.flac"):
        audio.save(tmp_path / "a.xyz", x, 8000)
    with pytest.raises(AudioError, match=r"FLAC files cannot hold subtype 'FLOAT'.*PCM_16"):
        audio.save(tmp_path / "a.flac", x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"t\.wav.*\(4000, 2\).*\(samples, channels\).*audio\.T"):
        audio.save(tmp_path / "t.wav", np.zeros((4000, 2), np.float32), 8000)
    with pytest.raises(AudioError, match="sr=0"):
        audio.save(tmp_path / "a.wav", x, 0)
    assert list(tmp_path.iterdir()) == []


def test_save_warns_before_clipping_an_integer_format(tmp_path):
    with pytest.warns(UserWarning, match="clips samples beyond ±1 .peak 1.500"):
        path = audio.save(tmp_path / "loud.wav", tone(440, 8000, 0.5, 1.5), 8000, subtype="PCM_16")
    y, _ = audio.load(path)
    assert y.max() == pytest.approx(1.0, abs=1e-4)  # libsndfile clips rather than wraps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        audio.save(tmp_path / "loud_float.wav", tone(440, 8000, 0.5, 1.5), 8000)


# --------------------------------------------------------------------------- partial reads, info
@pytest.mark.parametrize("name", ["a.wav", "a.flac", "a.mp3", "a.ogg"])
def test_offset_and_duration_read_the_same_samples_as_a_slice(tmp_path, name):
    path = audio.save(tmp_path / name, music(44100, 3.0), 44100)
    full, sr = audio.load(path)
    part, _ = audio.load(path, offset=1.25, duration=0.5)
    start = round(1.25 * sr)
    assert part.shape == (2, round(0.5 * sr))
    np.testing.assert_allclose(part, full[:, start:start + part.shape[1]], atol=1e-6)
    tail, _ = audio.load(path, offset=2.5, duration=10.0)  # stops at the end of the file
    np.testing.assert_array_equal(tail, full[:, round(2.5 * sr):])


def test_load_reads_only_the_requested_frames(tmp_path, monkeypatch):
    path = audio.save(tmp_path / "a.wav", music(44100, 3.0), 44100)
    requested = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    audio.load(path, offset=1.0, duration=0.25)
    assert requested == [round(0.25 * 44100)]


def test_info_reports_the_header(tmp_path):
    path = audio.save(tmp_path / "a.flac", music(22050, 1.5), 22050, subtype="PCM_16")
    i = audio.info(path)
    assert (i.sample_rate, i.channels, i.frames) == (22050, 2, round(1.5 * 22050))
    assert i.duration == pytest.approx(1.5) and (i.format, i.subtype) == ("FLAC", "PCM_16")


def test_load_resamples_and_keeps_the_frequency(tmp_path):
    path = audio.save(tmp_path / "a.wav", np.stack([tone(1000, 44100, 1.0, 0.5)] * 2), 44100)
    y, sr = audio.load(path, sr=16000, mono=True)
    assert sr == 16000 and y.dtype == np.float32 and y.shape[0] == 1
    assert abs(y.shape[1] - 16000) <= 1
    assert dominant_frequency(y[0], 16000) == pytest.approx(1000, abs=1.0)


def test_load_converts_channels(tmp_path):
    x = np.stack([tone(440, 8000, 0.5, 0.5), tone(660, 8000, 0.5, 0.25)])
    path = audio.save(tmp_path / "s.wav", x, 8000)
    mono, _ = audio.load(path, mono=True)
    np.testing.assert_allclose(mono[0], x.mean(axis=0), atol=1e-7)
    again, _ = audio.load(path, channels=2)
    np.testing.assert_array_equal(again, x)
    one = audio.save(tmp_path / "m.wav", x[0], 8000)
    stereo, _ = audio.load(one, channels=2)
    np.testing.assert_array_equal(stereo, np.stack([x[0], x[0]]))
    with pytest.raises(AudioError, match="mono=True asks for 1 channel but channels=2"):
        audio.load(path, mono=True, channels=2)


# --------------------------------------------------------------------------- load errors
def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav': no such file .*\.wav, \.flac"):
        audio.load(tmp_path / "nope.wav")


def test_folder_lists_the_audio_inside(tmp_path):
    audio.save(tmp_path / "song" / "mixture.wav", tone(440, 8000, 0.2), 8000)
    with pytest.raises(AudioError, match=r"song' is a folder, not an audio file; .*mixture\.wav"):
        audio.load(tmp_path / "song")


@pytest.mark.parametrize(("name", "content"), [
    ("notes.txt", b"this is not audio\n" * 20),
    ("broken.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200))),
    ("truncated.flac", b"fLaC" + bytes(50)),
])
def test_unreadable_files_list_the_accepted_formats(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=rf"{name}': cannot read it as audio .*Accepted formats: "
                                         r"\.wav, \.flac, \.ogg"):
        audio.load(path)
    with pytest.raises(AudioError, match=name):
        audio.info(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 8000)
    with pytest.raises(AudioError, match=r"empty\.wav' holds no samples"):
        audio.load(path)


def test_nan_and_inf_samples(tmp_path):
    x = tone(440, 8000, 0.5, 0.5)
    x[100], x[200], x[300] = np.nan, np.inf, np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav' contains 2 NaN and 1 Inf samples .first at "
                                         r"index \(0, 100\)"):
        audio.load(path)


def test_offset_past_the_end_and_bad_arguments(tmp_path):
    path = audio.save(tmp_path / "a.wav", tone(440, 8000, 1.0), 8000)
    with pytest.raises(AudioError, match=r"offset=2.0 s is past the end of '.*a\.wav' .1\.000 s"):
        audio.load(path, offset=2.0)
    with pytest.raises(AudioError, match="offset=-1"):
        audio.load(path, offset=-1)
    with pytest.raises(AudioError, match="duration=0"):
        audio.load(path, duration=0)
    with pytest.raises(AudioError, match="sr=-8000"):
        audio.load(path, sr=-8000)
    assert issubclass(AudioError, LabkitError) and issubclass(AudioError, ValueError)


# --------------------------------------------------------------------------- validate
@pytest.mark.parametrize("make", [np.zeros, torch.zeros])
def test_validate_accepts_good_audio_and_returns_it(make):
    x = make((2, 100))
    assert audio.validate(x) is x
    y = make(100)
    assert audio.validate(y) is y


@pytest.mark.parametrize(("value", "pattern"), [
    (np.zeros((1, 2, 100), np.float32), r"mix has shape \(1, 2, 100\); expected \(channels, "),
    (np.array(1.0, np.float32), r"mix has shape \(\); expected"),
    (np.zeros((2, 0), np.float32), r"mix has shape \(2, 0\): it holds no samples"),
    (np.zeros((44100, 2), np.float32), r"\(44100, 2\), which looks like \(samples, channels\)"),
    (np.zeros((2, 10), np.int16), r"mix has dtype int16; expected real floats"),
    (np.array([[0.0, np.inf]]), r"mix contains 0 NaN and 1 Inf samples .first at index \(0, 1\)"),
    (torch.tensor([[0.0, float("nan")]]), r"mix contains 1 NaN and 0 Inf"),
    ([0.0, 0.1], r"mix: expected a NumPy array or torch tensor, got list"),
])
def test_validate_rejects_with_named_messages(value, pattern):
    with pytest.raises(AudioError, match=pattern):
        audio.validate(value, name="mix")


def test_validate_1d_switch():
    with pytest.raises(AudioError, match=r"shape \(100,\); expected \(channels, samples\): use "):
        audio.validate(np.zeros(100, np.float32), allow_1d=False)


# --------------------------------------------------------------------------- resample
@pytest.mark.parametrize(("sr_in", "sr_out"), [(44100, 16000), (16000, 48000), (22050, 44100)])
def test_resample_keeps_the_frequency_in_numpy_and_torch(sr_in, sr_out):
    x = np.stack([tone(1000, sr_in, 1.0, 0.5), tone(1500, sr_in, 1.0, 0.5)])
    y_np = audio.resample(x, sr_in, sr_out)
    y_torch = audio.resample(torch.from_numpy(x), sr_in, sr_out)
    assert isinstance(y_np, np.ndarray) and isinstance(y_torch, torch.Tensor)
    assert y_np.dtype == np.float32 and y_torch.dtype == torch.float32
    assert y_np.shape == tuple(y_torch.shape) == (2, math.ceil(x.shape[1] * sr_out / sr_in))
    for c, freq in enumerate((1000, 1500)):
        assert dominant_frequency(y_np[c], sr_out) == pytest.approx(freq, abs=1.0)
    # The two resamplers differ in their filters, but on a band-limited tone they must agree
    # away from the edges (and match the ideal tone).
    middle = slice(sr_out // 10, -sr_out // 10)
    ideal = tone(1000, sr_out, 1.0, 0.5)[middle]
    assert np.abs(y_np[0, middle] - ideal).max() < 1e-3
    assert np.abs(y_torch.numpy()[0, middle] - ideal).max() < 1e-3


def test_resample_identity_and_leading_dims():
    x = np.random.default_rng(0).standard_normal((3, 2, 1000)).astype(np.float32)
    assert audio.resample(x, 8000, 8000) is x
    y = audio.resample(x, 8000, 4000)
    assert y.shape == (3, 2, 500)
    np.testing.assert_allclose(y[1, 0], audio.resample(x[1, 0], 8000, 4000), atol=1e-6)
    t = audio.resample(torch.from_numpy(x), 8000, 4000)
    assert t.shape == (3, 2, 500)
    with pytest.raises(AudioError, match="sr_out=44100.5"):
        audio.resample(x, 8000, 44100.5)


# --------------------------------------------------------------------------- channels, length
@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor])
def test_channel_conversions(to):
    stereo = to(np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], np.float32))
    mono = audio.to_mono(stereo)
    assert type(mono) is type(stereo)
    np.testing.assert_array_equal(np.asarray(mono), [[2.0, 3.0, 4.0]])
    assert audio.to_channels(stereo, 2) is stereo
    np.testing.assert_array_equal(np.asarray(audio.to_channels(stereo, 1)), [[2.0, 3.0, 4.0]])
    dup = audio.to_channels(mono, 2)
    np.testing.assert_array_equal(np.asarray(dup), [[2.0, 3.0, 4.0]] * 2)
    assert tuple(audio.to_channels(to(np.zeros(5, np.float32)), 3).shape) == (3, 5)
    batch = to(np.zeros((4, 2, 7), np.float32))
    assert tuple(audio.to_mono(batch).shape) == (4, 1, 7)
    six = to(np.zeros((6, 10), np.float32))
    with pytest.raises(AudioError, match=r"cannot convert 6 channels to 2: only 1 -> N"):
        audio.to_channels(six, 2)
    with pytest.raises(AudioError, match="channels=0"):
        audio.to_channels(stereo, 0)


@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor])
def test_pad_or_crop(to):
    x = to(np.arange(1, 7, dtype=np.float32)[None])  # (1, 6): 1..6
    cases = {
        (4, "start"): [1, 2, 3, 4], (4, "center"): [2, 3, 4, 5], (4, "end"): [3, 4, 5, 6],
        (9, "start"): [1, 2, 3, 4, 5, 6, 0, 0, 0], (9, "center"): [0, 1, 2, 3, 4, 5, 6, 0, 0],
        (9, "end"): [0, 0, 0, 1, 2, 3, 4, 5, 6], (6, "center"): [1, 2, 3, 4, 5, 6],
    }
    for (length, align), expected in cases.items():
        out = audio.pad_or_crop(x, length, align=align)
        assert type(out) is type(x)
        np.testing.assert_array_equal(np.asarray(out), [expected])
    with pytest.raises(AudioError, match="align='middle'"):
        audio.pad_or_crop(x, 3, align="middle")
    with pytest.raises(AudioError, match="length=0"):
        audio.pad_or_crop(x, 0)


# --------------------------------------------------------------------------- levels
def test_db_and_gain_conversions():
    assert audio.db_to_gain(-6.0) == pytest.approx(0.501187, rel=1e-5)
    assert audio.gain_to_db(0.5) == pytest.approx(-6.0206, abs=1e-4)
    assert audio.gain_to_db(-2.0) == pytest.approx(audio.gain_to_db(2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert audio.gain_to_db(0.0) == -math.inf
        assert audio.gain_to_db(np.array([0.0, 1.0])).tolist() == [-math.inf, 0.0]
    db = torch.tensor([-20.0, 0.0, 6.0])
    torch.testing.assert_close(audio.gain_to_db(audio.db_to_gain(db)), db)


@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor])
def test_peak_normalize_and_silence(to):
    x = to(np.array([[0.1, -0.4, 0.2]], np.float32))
    y, gain = audio.peak_normalize(x, peak=0.8)
    assert type(y) is type(x) and gain == pytest.approx(2.0)
    np.testing.assert_allclose(np.asarray(y), [[0.2, -0.8, 0.4]], rtol=1e-6)
    silent = to(np.zeros((2, 100), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, gain = audio.peak_normalize(silent)
        assert gain == 1.0 and not np.asarray(out).any()
        assert audio.rms_db(silent) == -math.inf
        assert audio.loudness(to(np.zeros((2, 48000), np.float32)), 48000) == -math.inf
        out, gain = audio.loudness_normalize(to(np.zeros((2, 48000), np.float32)), 48000)
        assert gain == 1.0 and not np.asarray(out).any()


def test_rms_db_of_a_full_scale_sine():
    assert audio.rms_db(tone(1000, 48000, 1.0)) == pytest.approx(-3.0103, abs=1e-3)


def test_k_weighting_reproduces_the_bs1770_table_at_48k():
    # ITU-R BS.1770-4, Tables 1 and 2 (48 kHz).
    expected = np.array([
        [1.53512485958697, -2.69169618940638, 1.19839281085285,
         1.0, -1.69065929318241, 0.73248077421585],
        [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
    ])
    np.testing.assert_allclose(audio.k_weighting(48000), expected, atol=1e-12)


@pytest.mark.parametrize("sr", [48000, 44100])
def test_loudness_of_a_full_scale_997_hz_sine(sr):
    x = tone(997, sr, 5.0)
    # BS.1770's -0.691 dB offset is chosen so that this mono sine reads -3.01 LUFS; the same sine
    # in both stereo channels has twice the power: 0.00 LUFS.
    assert audio.loudness(x, sr) == pytest.approx(-3.01, abs=0.01)
    assert audio.loudness(np.stack([x, x]), sr) == pytest.approx(0.0, abs=0.01)
    # EBU Tech 3341 test 1: stereo 1 kHz at -23 dBFS reads -23.0 LUFS.
    quiet = np.stack([x, x]) * np.float32(10 ** (-23 / 20))
    assert audio.loudness(quiet, sr) == pytest.approx(-23.0, abs=0.1)


def test_loudness_gates_follow_ebu_tech_3341():
    sr = 48000

    def seg(seconds, dbfs):
        return tone(1000, sr, seconds, 10 ** (dbfs / 20))

    # test 4: the -72 dBFS parts fall under the absolute gate, the -36 dBFS parts under the
    # relative gate; only the -23 dBFS minute counts.
    x = np.concatenate([seg(10, -72), seg(10, -36), seg(60, -23), seg(10, -36), seg(10, -72)])
    assert audio.loudness(np.stack([x, x]), sr) == pytest.approx(-23.0, abs=0.1)
    # test 5: -26 / -20 / -26 dBFS; everything passes the gates.
    x = np.concatenate([seg(20, -26), seg(20.1, -20), seg(20, -26)])
    assert audio.loudness(np.stack([x, x]), sr) == pytest.approx(-23.0, abs=0.1)
    # Ungated, the quiet parts would pull the reading down by several LU.
    x = np.concatenate([seg(10, -36), seg(10, -23)])
    assert audio.loudness(x, sr) == pytest.approx(-23 - 3.01, abs=0.15)


def test_loudness_normalize_reaches_the_target_in_numpy_and_torch():
    x = music(44100, 2.0) * 0.1
    y, gain = audio.loudness_normalize(x, 44100, target_lufs=-16.0)
    assert audio.loudness(y, 44100) == pytest.approx(-16.0, abs=1e-6)
    assert gain == pytest.approx(audio.db_to_gain(-16.0 - audio.loudness(x, 44100)))
    t, t_gain = audio.loudness_normalize(torch.from_numpy(x), 44100, target_lufs=-16.0)
    assert isinstance(t, torch.Tensor) and t_gain == pytest.approx(gain, rel=1e-9)
    np.testing.assert_allclose(t.numpy(), y, rtol=1e-6)


def test_loudness_needs_400_ms():
    with pytest.raises(AudioError, match=r"at least 400 ms \(6400 samples at 16000 Hz\), got 6399"):
        audio.loudness(np.zeros(6399, np.float32), 16000)
