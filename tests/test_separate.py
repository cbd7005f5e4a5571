"""Chunked separation: any length, rate and channel count in; the model's chunks never show."""
import numpy as np
import pytest
import soundfile as sf
import torch

from labkit.audio import pad_or_crop, resample
from labkit.errors import AudioError, LabkitError
from labkit.separate import chunk_starts, crossfade_window, separate, separate_file

SR = 8000


class Echo(torch.nn.Module):
    """An identity-like separator: source "same" is the input, "offset" the input + 1.

    The constant offset makes any error in the cross-fade weights visible: the output is exactly
    input + 1 only if the weights of overlapping chunks sum to one everywhere.
    """

    def __init__(self, channels=2, sample_rate=SR, chunk_seconds=0.25, multiple=1):
        super().__init__()
        self.sample_rate, self.channels, self.chunk_seconds = sample_rate, channels, chunk_seconds
        self.sources = ("same", "offset")
        self.multiple = multiple
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def valid_length(self, n):
        return -(-n // self.multiple) * self.multiple

    def forward(self, x):
        assert x.shape[-1] % self.multiple == 0
        assert torch.is_inference_mode_enabled() and not self.training
        self.calls.append(tuple(x.shape))
        return torch.stack([x * self.gain, x + 1.0], dim=1)


def noise(shape, seed=0):
    return (0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def tones(channels, n, sr, freqs=(220.0, 530.0, 1250.0)):
    """Band-limited audio (below 1.3 kHz), so that resampling to 8 kHz keeps all of it."""
    t = np.arange(n) / sr
    return np.stack([sum(0.2 * np.sin(2 * np.pi * f * (c + 1) ** 0.1 * t + c) for f in freqs)
                     for c in range(channels)]).astype(np.float32)


# --------------------------------------------------------------------------- chunk layout
@pytest.mark.parametrize(("n", "chunk", "fade"), [
    (1000, 100, 25), (1000, 100, 50), (1001, 99, 49), (37, 100, 25), (100, 100, 25),
    (5000, 128, 0), (250, 100, 1),
])
def test_crossfade_weights_sum_to_one_everywhere(n, chunk, fade):
    starts = chunk_starts(n, chunk, chunk - fade)
    assert starts[-1] + chunk >= n and (len(starts) == 1 or starts[-2] + chunk < n)
    total = np.zeros(starts[-1] + chunk)
    for k, start in enumerate(starts):
        total[start:start + chunk] += crossfade_window(chunk, fade, fade_in=k > 0,
                                                       fade_out=k < len(starts) - 1)
    np.testing.assert_allclose(total[:n], 1.0, atol=1e-6)


def test_crossfade_window_shape():
    w = crossfade_window(10, 4)
    assert w.dtype == np.float32 and w.shape == (10,)
    assert (np.diff(w[:4]) > 0).all() and (w[4:6] == 1).all() and (np.diff(w[6:]) < 0).all()
    with pytest.raises(ValueError, match="fade=6"):
        crossfade_window(10, 6)


# --------------------------------------------------------------------------- identity through chunks
@pytest.mark.parametrize("n", [100, 2000, 2000 - 1, 2001, 17 * 1000 + 3])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_identity_model_reproduces_the_input(n, batch_size):
    model = Echo()  # chunk = 0.25 s = 2000 samples
    audio = noise((2, n))
    out = separate(model, audio, SR, batch_size=batch_size, progress=False)
    assert out.shape == (2, 2, n) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], audio, atol=1e-6)
    np.testing.assert_allclose(out[1], audio + 1.0, atol=1e-6)
    assert all(shape[0] <= batch_size and shape[1:] == (2, 2000) for shape in model.calls)
    assert model.training  # the model's mode is restored


@pytest.mark.parametrize(("in_channels", "model_channels"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_channel_conversion_both_ways(in_channels, model_channels):
    audio = noise((in_channels, 5001))
    out = separate(Echo(channels=model_channels), audio, SR, progress=False)
    assert out.shape == (2, in_channels, 5001)
    seen = audio.mean(0, keepdims=True) if model_channels < in_channels else audio
    np.testing.assert_allclose(out[0], np.broadcast_to(seen, audio.shape), atol=1e-6)


def test_one_dimensional_and_torch_input():
    audio = noise(3000)
    out = separate(Echo(channels=1), torch.from_numpy(audio), SR, progress=False)
    assert out.shape == (2, 1, 3000)
    np.testing.assert_allclose(out[0, 0], audio, atol=1e-6)


@pytest.mark.parametrize("sr", [16000, 11025, 44100])
def test_other_sample_rates_are_resampled_there_and_back(sr):
    n = int(1.3 * sr) + 7
    audio = tones(2, n, sr)
    out = separate(Echo(), audio, sr, progress=False)
    assert out.shape == (2, 2, n)
    edge = sr // 50  # the resampler's filters ring at the abrupt start and end
    np.testing.assert_allclose(out[0, :, edge:-edge], audio[:, edge:-edge], atol=2e-3)
    np.testing.assert_allclose(out[1, :, edge:-edge], audio[:, edge:-edge] + 1, atol=2e-3)
    # streamed in blocks, it is labkit.audio.resample there and back, edges included
    there_and_back = pad_or_crop(resample(resample(audio, sr, SR), SR, sr), n)
    np.testing.assert_allclose(out[0], there_and_back, atol=1e-5)


def test_valid_length_and_chunk_seconds():
    model = Echo(multiple=64)
    audio = noise((2, 3000))
    out = separate(model, audio, SR, chunk_seconds=0.1, overlap=0.5, progress=False)
    assert {shape[-1] for shape in model.calls} == {832}  # 800 rounded up to a multiple of 64
    np.testing.assert_allclose(out[1], audio + 1.0, atol=1e-6)


def test_bad_inputs_and_models():
    audio = noise((2, 1000))
    bad = audio.copy()
    bad[0, 10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        separate(Echo(), bad, SR, progress=False)
    with pytest.raises(ValueError, match="overlap=0.7"):
        separate(Echo(), audio, SR, overlap=0.7, progress=False)
    with pytest.raises(LabkitError, match="lacks sample_rate, channels, sources"):
        separate(torch.nn.Identity(), audio, SR, progress=False)

    class Wrong(Echo):
        def forward(self, x):
            return x

    with pytest.raises(LabkitError, match=r"returned shape \(1, 2, 2000\).*expected \(batch, "
                                          r"sources, channels, samples\) = \(1, 2, 2, 2000\)"):
        separate(Wrong(), audio, SR, progress=False)


# --------------------------------------------------------------------------- files
def write(path, audio, sr):
    sf.write(path, audio.T, sr, subtype="FLOAT")
    return path


def test_separate_file_names_rate_channels_and_content(tmp_path):
    sr = 16000
    audio = tones(2, int(1.7 * sr), sr)
    song = write(tmp_path / "my song.wav", audio, sr)
    paths = separate_file(song, Echo(), progress=False)
    folder = tmp_path / "my song_separated"
    assert paths == {"same": folder / "my song_same.wav", "offset": folder / "my song_offset.wav"}
    assert sorted(p.name for p in folder.iterdir()) == ["my song_offset.wav", "my song_same.wav"]
    expected = separate(Echo(), audio, sr, progress=False)
    for i, stem in enumerate(("same", "offset")):
        data, rate = sf.read(paths[stem], dtype="float32", always_2d=True)
        assert rate == sr and data.shape == (audio.shape[1], 2)
        # streamed in blocks, it equals the whole-array result
        np.testing.assert_allclose(data.T, expected[i], atol=1e-6)


def test_separate_file_out_dir_and_stem_subset(tmp_path):
    song = write(tmp_path / "a.flac.wav", noise((1, 3000)), SR)
    paths = separate_file(song, Echo(), out_dir=tmp_path / "out", stems=["offset"],
                          progress=False, batch_size=2)
    assert paths == {"offset": tmp_path / "out" / "a.flac_separated" / "a.flac_offset.wav"}
    data, _ = sf.read(paths["offset"], dtype="float32")
    np.testing.assert_allclose(data, noise((1, 3000))[0] + 1, atol=1e-6)
    with pytest.raises(LabkitError, match="stems=\\('vocals',\\)"):
        separate_file(song, Echo(), stems=["vocals"], progress=False)


class FailsAfter(Echo):
    """Raises ``error`` on call number ``calls + 1``, noting what ``watch`` held at that moment."""

    def __init__(self, calls, error, watch=None):
        super().__init__()
        self.limit, self.error, self.watch, self.seen = calls, error, watch, {}

    def forward(self, x):
        if len(self.calls) >= self.limit:
            if self.watch is not None:
                self.seen = {p.name: p.stat().st_size for p in self.watch.iterdir()}
            raise self.error
        return super().forward(x)


@pytest.mark.parametrize("error", [RuntimeError("GPU on fire"), KeyboardInterrupt()])
def test_separate_file_leaves_no_partial_files(tmp_path, error):
    song = write(tmp_path / "long.wav", noise((2, 10 * SR)), SR)  # 40 chunks, blocks of 4 s
    model = FailsAfter(25, error, watch=tmp_path / "long_separated")
    with pytest.raises(type(error)) as info:
        separate_file(song, model, progress=False)
    # it failed mid-way, when both stems' temporary files already held audio
    assert len(model.seen) == 2 and all(size > 100_000 for size in model.seen.values())
    assert all(name.endswith(".part") for name in model.seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]
    if isinstance(error, RuntimeError):
        assert "no output was written" in "".join(getattr(info.value, "__notes__", []))


def test_separate_file_keeps_an_existing_folder_and_its_files(tmp_path):
    song = write(tmp_path / "x.wav", noise((2, 3 * SR)), SR)
    folder = tmp_path / "x_separated"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        separate_file(song, FailsAfter(3, RuntimeError("boom")), progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_separate_file_bad_input_names_the_file(tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioError, match="broken.wav"):
        separate_file(broken, Echo(), progress=False)
    with pytest.raises(AudioError, match="missing.wav"):
        separate_file(tmp_path / "missing.wav", Echo(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.wav"]
