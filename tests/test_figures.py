"""labkit.figures: each helper draws the right data on the right axes, and save writes real files."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from scipy.signal import get_window

from labkit import figures
from labkit.errors import AudioError, LabkitError

SR = 16000


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def sine(freq: float = 1000.0, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr).astype(np.float32)


def image_of(ax) -> np.ndarray:
    return np.asarray(ax.collections[0].get_array())


def row_centres(ax) -> np.ndarray:
    """The frequency (Hz) at the centre of each image row, read back from the mesh."""
    edges = ax.collections[0].get_coordinates()[:, 0, 1]
    return (edges[:-1] + edges[1:]) / 2


# ----------------------------------------------------------------------------------- waveform
def test_waveform_plots_samples_against_seconds():
    x = sine(seconds=0.5)
    fig, ax = figures.waveform(x, SR, title="sine")
    assert isinstance(fig, plt.Figure) and ax.figure is fig
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_xdata(), np.arange(len(x)) / SR)
    np.testing.assert_allclose(line.get_ydata(), x, atol=1e-7)
    assert ax.get_xlim() == pytest.approx((0.0, 0.5))
    assert ax.get_xlabel() == "time (s)" and ax.get_title() == "sine"


def test_waveform_accepts_torch_stereo_and_labels_channels():
    stereo = torch.stack([torch.from_numpy(sine()), 0.5 * torch.from_numpy(sine())])
    stereo.requires_grad_(True)
    _, ax = figures.waveform(stereo[:, :4000], SR, label="mix")
    assert [line.get_label() for line in ax.lines] == ["mix L", "mix R"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 0.5 * sine()[:4000], atol=1e-6)


def test_long_waveform_is_an_envelope_that_keeps_the_peaks():
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal(200_000)
    x[123_457] = 0.95
    x[7] = -0.9
    _, ax = figures.waveform(x, SR, max_points=2000)
    y = ax.lines[0].get_ydata()
    assert len(y) <= 2002
    assert y.max() == pytest.approx(0.95) and y.min() == pytest.approx(-0.9)
    peak_time = ax.lines[0].get_xdata()[np.argmax(y)]
    assert abs(peak_time - 123_457 / SR) <= 200_000 / 1000 / SR  # within one envelope block


def test_waveform_rejects_channels_last_with_a_hint():
    with pytest.raises(AudioError, match=r"channels-last.*audio\.T"):
        figures.waveform(np.zeros((44100, 2)), 44100)
    with pytest.raises(LabkitError, match="sr=0"):
        figures.waveform(np.zeros(10), 0)


# -------------------------------------------------------------------------------- spectrogram
@pytest.mark.parametrize("y_axis", ["linear", "log", "mel"])
@pytest.mark.parametrize("as_torch", [False, True])
def test_spectrogram_of_1khz_sine_is_brightest_at_1khz(y_axis, as_torch):
    x = torch.from_numpy(sine()) if as_torch else sine()
    fig, ax = figures.spectrogram(x, SR, y_axis=y_axis)
    image = image_of(ax)
    assert image.shape == (513, 1 + SR // 256)
    brightest = np.argmax(image.mean(axis=1))
    assert row_centres(ax)[brightest] == pytest.approx(1000.0, abs=SR / 1024 / 2)
    assert ax.get_yscale() == {"linear": "linear", "log": "log", "mel": "function"}[y_axis]
    assert ax.get_ylim()[1] == pytest.approx(SR / 2)
    assert len(fig.axes) == 2  # the image and its colorbar


def test_spectrogram_values_match_a_numpy_stft():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SR).astype(np.float32)
    _, ax = figures.spectrogram(x, SR, n_fft=512, hop_length=128, db_range=200.0)
    frame = 20  # a frame away from the padded edges: samples [20*128 - 256, 20*128 + 256)
    segment = x[frame * 128 - 256: frame * 128 + 256] * get_window("hann", 512)
    reference = 20 * np.log10(np.maximum(np.abs(np.fft.rfft(segment)), 1e-5))
    np.testing.assert_allclose(image_of(ax)[:, frame], reference, atol=1e-3)
    times = ax.collections[0].get_coordinates()[0, :, 0]
    assert (times[frame] + times[frame + 1]) / 2 == pytest.approx(frame * 128 / SR)


def test_long_spectrogram_is_pooled_in_time_and_keeps_a_click_in_place():
    x = 0.001 * np.random.default_rng(3).standard_normal(20 * SR)
    x[3 * SR] = 1.0
    _, ax = figures.spectrogram(x, SR, max_frames=100, colorbar=False)
    image, times = image_of(ax), ax.collections[0].get_coordinates()[0, :, 0]
    assert image.shape == (513, 97)  # 1251 frames in groups of 13
    assert times[-1] == pytest.approx(20.0 + 0.5 * 256 / SR)
    loudest = np.argmax(image.mean(axis=0))
    assert times[loudest] <= 3.0 <= times[loudest + 1]


def test_spectrogram_colours_span_db_range_below_the_maximum():
    _, ax = figures.spectrogram(sine(), SR, db_range=60.0)
    top = image_of(ax).max()
    assert ax.collections[0].get_clim() == pytest.approx((top - 60.0, top))


def test_spectrogram_detects_magnitudes_and_waveforms():
    x = sine(seconds=2.0)
    mag = np.abs(np.fft.rfft(x[:1024 * 20].reshape(20, 1024), axis=1)).T  # (513, 20)
    _, ax = figures.spectrogram(mag, SR)
    assert image_of(ax).shape == (513, 20)
    np.testing.assert_allclose(image_of(ax), np.maximum(20 * np.log10(np.maximum(mag, 1e-5)),
                                                        20 * np.log10(mag.max()) - 80), atol=1e-3)
    _, ax = figures.spectrogram(np.stack([x, x]), SR, colorbar=False)  # 2 rows: a waveform
    assert image_of(ax).shape == (513, 1 + 2 * SR // 256)
    _, ax = figures.spectrogram(np.stack([x, x]), SR, is_magnitude=True, colorbar=False,
                                max_frames=0)  # 0: no pooling of long inputs
    assert image_of(ax).shape == (2, 2 * SR)
    _, ax = figures.spectrogram(torch.from_numpy(mag)[None, None], SR, colorbar=False)
    assert image_of(ax).shape == (513, 20)  # (batch=1, channels=1, bins, frames)


def test_spectrogram_places_bins_at_given_frequencies():
    mag = np.ones((4, 10))
    mag[2] = 10.0
    _, ax = figures.spectrogram(mag, SR, frequencies=[100, 300, 1000, 3000], y_axis="mel")
    assert row_centres(ax)[2] == pytest.approx(np.mean([(300 + 1000) / 2, (1000 + 3000) / 2]))
    with pytest.raises(LabkitError, match=r"one centre per bin, \(4,\)"):
        figures.spectrogram(mag, SR, frequencies=[1, 2, 3])


def test_spectrogram_rejects_unknown_axis():
    with pytest.raises(LabkitError, match="y_axis='bark'"):
        figures.spectrogram(sine(), SR, y_axis="bark")


# --------------------------------------------------------------------------------------- mask
def test_mask_shows_values_on_a_fixed_zero_to_one_scale():
    rng = np.random.default_rng(2)
    m = rng.uniform(0.2, 0.7, size=(257, 30)).astype(np.float32)
    _, ax = figures.mask(torch.from_numpy(m)[None], SR, hop_length=128, title="IRM")
    np.testing.assert_allclose(image_of(ax), m, atol=1e-7)
    assert ax.collections[0].get_clim() == (0.0, 1.0)
    assert ax.get_ylim()[1] == pytest.approx(SR / 2) and ax.get_title() == "IRM"
    with pytest.raises(LabkitError, match=r"mask has shape \(5,\)"):
        figures.mask(np.zeros(5), SR)


# ----------------------------------------------------------------------------- many at once
def test_helpers_draw_into_the_axes_they_are_given():
    fig, axes = plt.subplots(2, 2)
    before = plt.get_fignums()
    history = {"step": [1, 2], "train_loss": [1.0, 0.5]}
    calls = [
        lambda ax: figures.waveform(sine(), SR, ax=ax),
        lambda ax: figures.spectrogram(sine(), SR, ax=ax, colorbar=False),
        lambda ax: figures.mask(np.full((65, 8), 0.5), SR, ax=ax, colorbar=False),
        lambda ax: figures.loss_curves(history, ax=ax),
    ]
    for call, ax in zip(calls, axes.ravel()):
        got_fig, got_ax = call(ax)
        assert got_fig is fig and got_ax is ax
        assert ax.has_data()
    assert plt.get_fignums() == before


def test_compare_spectrograms_shares_one_colour_scale():
    loud, quiet = sine(), 0.1 * sine()
    fig, axes = figures.compare_spectrograms({"loud": loud, "quiet": torch.from_numpy(quiet)}, SR)
    assert [ax.get_title() for ax in axes] == ["loud", "quiet"]
    top = image_of(axes[0]).max()
    assert image_of(axes[1]).max() == pytest.approx(top - 20.0, abs=0.01)  # 0.1 = -20 dB
    for ax in axes:
        assert ax.collections[0].get_clim() == pytest.approx((top - 80.0, top))
    assert len(fig.axes) == 3  # two panels and one colorbar


def test_compare_spectrograms_wraps_rows_and_hides_spare_panels():
    signals = {f"s{i}": sine(250.0 * (i + 1), 0.25) for i in range(5)}
    fig, axes = figures.compare_spectrograms(signals, SR, y_axis="log")
    assert len(axes) == 5
    assert sum(ax.get_visible() for ax in fig.axes) == 6  # 5 panels + the colorbar
    with pytest.raises(LabkitError, match="signals is empty"):
        figures.compare_spectrograms({}, SR)


def test_helpers_leave_global_settings_alone():
    before = dict(plt.rcParams)
    figures.waveform(sine(), SR)
    figures.compare_spectrograms({"a": sine()}, SR)
    assert dict(plt.rcParams) == before


def test_style_restores_only_its_own_settings():
    # a notebook's first figure switches the inline backend on, which turns on interactive mode
    # inside the style block; restoring every setting on exit (plt.rc_context) would undo that
    # and no later figure would show
    interactive = plt.rcParams["interactive"]
    try:
        with figures.style():
            assert plt.rcParams["axes.spines.top"] is False
            plt.rcParams["interactive"] = not interactive
        assert plt.rcParams["interactive"] is (not interactive)
    finally:
        plt.rcParams["interactive"] = interactive


# -------------------------------------------------------------------------------- loss curves
def _lines(ax) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.lines if not line.get_label().startswith("_")}


def test_loss_curves_reads_a_trainer_history_json(tmp_path):
    history = {"step": [1, 2, 3, 4], "train_loss": [1.0, 0.5, 0.25, 0.2], "lr": [1e-3] * 4,
               "val_step": [2, 4], "val_loss": [0.6, 0.3]}
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history))
    _, ax = figures.loss_curves(path, title="run 1")
    assert _lines(ax) == {"train_loss": ([1, 2, 3, 4], [1.0, 0.5, 0.25, 0.2]),
                          "val_loss": ([2, 4], [0.6, 0.3])}
    assert ax.get_yscale() == "log" and ax.get_title() == "run 1"
    _, ax = figures.loss_curves(tmp_path, keys=["lr"], log_y=False)  # the run folder works too
    assert _lines(ax) == {"lr": ([1, 2, 3, 4], [1e-3] * 4)} and ax.get_yscale() == "linear"


def test_loss_curves_reads_what_the_trainer_saves(tmp_path):
    from labkit.train import History

    history = History({"step": [10, 20], "epoch": [0, 0], "train_loss": [0.9, 0.4],
                       "lr": [1e-3, 1e-3], "time": [1.0, 2.0], "val_step": [20],
                       "val_loss": [0.5]})
    path = history.save(tmp_path / "history.json")
    for source in (history, path):
        _, ax = figures.loss_curves(source)
        assert _lines(ax) == {"train_loss": ([10, 20], [0.9, 0.4]), "val_loss": ([20], [0.5])}


def test_loss_curves_accepts_pairs_and_per_step_records():
    _, ax = figures.loss_curves({"train_loss": [(10, 2.0), (20, 1.0)], "val_loss": [[20, 1.5]]})
    assert _lines(ax) == {"train_loss": ([10, 20], [2.0, 1.0]), "val_loss": ([20], [1.5])}
    records = [{"step": 1, "train_loss": 1.0}, {"step": 2, "train_loss": 0.5, "val_loss": 0.7},
               {"step": 3, "train_loss": None}]
    _, ax = figures.loss_curves(records)
    assert _lines(ax) == {"train_loss": ([1, 2], [1.0, 0.5]), "val_loss": ([2], [0.7])}


def test_loss_curves_falls_back_to_linear_for_non_positive_values_and_smooths():
    _, ax = figures.loss_curves({"train_loss": [1.0, -1.0, 2.0, 0.0]}, smooth=2)
    assert ax.get_yscale() == "linear"
    smoothed = next(line for line in ax.lines if line.get_label() == "train_loss")
    np.testing.assert_allclose(smoothed.get_ydata(), [1.0, 0.0, 0.5, 1.0])


def test_loss_curves_errors_name_what_exists(tmp_path):
    with pytest.raises(LabkitError, match=r"no numeric series \['val_loss'\].*\['train_loss'\]"):
        figures.loss_curves({"train_loss": [1.0]}, keys=["val_loss"])
    with pytest.raises(LabkitError, match="does not exist"):
        figures.loss_curves(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------- save
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_save_writes_pdf_and_png_into_labkit_figures_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_FIGURES_DIR", str(tmp_path / "figs"))
    fig, _ = figures.spectrogram(sine(), SR)
    paths = figures.save(fig, "01 STFT: leakage")
    assert paths == [tmp_path / "figs" / "01_stft_leakage.pdf",
                     tmp_path / "figs" / "01_stft_leakage.png"]
    pdf, png = (p.read_bytes() for p in paths)
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [p.name for p in paths]


def test_save_default_folders_and_inputs(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_FIGURES_DIR", raising=False)
    monkeypatch.setattr(figures, "repo_root", lambda: tmp_path / "checkout")
    fig, ax = figures.waveform(sine(), SR)
    (path,) = figures.save((fig, ax), "Wave form.png", formats=("png",))
    assert path == tmp_path / "checkout" / "build" / "figures" / "wave_form.png"
    monkeypatch.setattr(figures, "repo_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    (path,) = figures.save(ax, "x", formats=("svg",))
    assert path == tmp_path / "figures" / "x.svg" and b"<svg" in path.read_bytes()
    with pytest.raises(LabkitError, match="no letters or digits"):
        figures.save(fig, " :: ")
    with pytest.raises(LabkitError, match="pass a matplotlib Figure"):
        figures.save("figure", "x")


@pytest.mark.parametrize(("name", "stem"), [
    ("01 STFT: leakage", "01_stft_leakage"), ("Mask (IRM) / vocals", "mask_irm_vocals"),
    ("loss.pdf", "loss"), ("__ü-ber__", "ber"),
])
def test_figure_stem(name, stem):
    assert figures.figure_stem(name) == stem
