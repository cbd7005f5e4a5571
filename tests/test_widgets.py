"""labkit.widgets: the mode rule, static output for headless runs, and live widgets driven from code."""
from __future__ import annotations

import io
import warnings

import matplotlib

matplotlib.use("Agg")

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import soundfile as sf
import torch
from IPython import display as ipd

from labkit import figures, widgets
from labkit.errors import AudioError, LabkitError

SR = 8000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sine(freq: float = 440.0, seconds: float = 0.5) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR).astype(np.float32)


class ZMQInteractiveShell:
    """Looks like a Jupyter kernel's shell to widgets.mode() (it checks the class name)."""

    execution_count = 7


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in ("LABKIT_STATIC", "CI", "LABKIT_FAST"):
        monkeypatch.delenv(name, raising=False)
    yield
    plt.close("all")


@pytest.fixture
def shown(monkeypatch) -> list:
    """Everything passed to IPython.display.display, in order."""
    objects: list = []
    monkeypatch.setattr(ipd, "display", lambda *objs, **kwargs: objects.extend(objs))
    return objects


@pytest.fixture
def static(monkeypatch):
    monkeypatch.setenv("LABKIT_STATIC", "1")


@pytest.fixture
def live(monkeypatch):
    monkeypatch.setenv("LABKIT_STATIC", "0")


def wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode WAV bytes to (samples, channels) float and the sample rate."""
    samples, sr = sf.read(io.BytesIO(data), always_2d=True)
    return samples, sr


# --------------------------------------------------------------------------------------- mode
@pytest.mark.parametrize(("env", "shell", "expected"), [
    ({}, None, "static"),
    ({}, ZMQInteractiveShell(), "live"),
    ({}, object(), "static"),  # terminal IPython or anything else: no widget frontend
    ({"CI": "true"}, ZMQInteractiveShell(), "static"),
    ({"LABKIT_FAST": "1"}, ZMQInteractiveShell(), "live"),
    ({"LABKIT_STATIC": "1"}, ZMQInteractiveShell(), "static"),
    ({"LABKIT_STATIC": "0"}, None, "live"),
    ({"LABKIT_STATIC": "0", "CI": "1"}, ZMQInteractiveShell(), "live"),
    ({"LABKIT_STATIC": ""}, ZMQInteractiveShell(), "live"),
])
def test_mode_rule(monkeypatch, env, shell, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(widgets, "_get_ipython", lambda: shell)
    assert widgets.mode() == expected


def test_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("LABKIT_STATIC", "maybe")
    with pytest.raises(LabkitError, match="LABKIT_STATIC='maybe'"):
        widgets.mode()


# ------------------------------------------------------------------------------------- player
def test_static_player_encodes_channels_first_audio(static, shown):
    stereo = torch.stack([torch.from_numpy(sine()), -0.5 * torch.from_numpy(sine())])
    p = widgets.player(stereo, SR, title="tone")
    assert isinstance(p, ipd.Audio) and shown == [p]
    samples, sr = wav(p.data)
    assert sr == SR and samples.shape == (len(sine()), 2)
    assert np.abs(samples[:, 0]).max() == pytest.approx(1.0, abs=1e-3)  # peak-normalised
    np.testing.assert_allclose(samples[:, 1], -0.5 * samples[:, 0], atol=1e-4)
    assert "<b>tone</b>" in p._repr_html_()


def test_player_is_silence_safe_and_rejects_nan(static, shown):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = widgets.player(np.zeros(1000), SR)
    assert np.all(wav(p.data)[0] == 0)
    loud = widgets.player(np.full(100, 3.0), SR, normalize=False, display=False)
    assert wav(loud.data)[0].max() == pytest.approx(1.0, abs=1e-4)  # clipped, not an error
    with pytest.raises(AudioError, match="NaN"):
        widgets.player(np.array([0.0, np.nan]), SR)
    assert len(shown) == 1


def test_live_player_is_a_titled_audio_widget(live, shown):
    box = widgets.player(sine(), SR, title="tone")
    assert isinstance(box, ipywidgets.VBox) and shown == [box]
    title, audio = box.children
    assert title.value == "<b>tone</b>"
    assert isinstance(audio, ipywidgets.Audio) and audio.format == "wav"
    assert wav(audio.value)[1] == SR


def test_display_false_displays_nothing(static, shown):
    widgets.player(sine(), SR, display=False)
    widgets.compare({"a": sine()}, SR, display=False)
    widgets.ab_test(sine(), sine(), SR, display=False)
    widgets.explorer(lambda: "hi", display=False)
    assert shown == []


def test_result_left_as_last_line_of_a_cell_is_shown_once(static, shown, monkeypatch):
    shell = ZMQInteractiveShell()
    monkeypatch.setattr(widgets, "_get_ipython", lambda: shell)
    view = widgets.compare({"a": sine()}, SR, spectrograms=False)
    assert len(shown) == 1
    view._ipython_display_()  # what IPython does with the cell's value: skipped once
    assert len(shown) == 1
    shell.execution_count += 1  # shown again in a later cell
    view._ipython_display_()
    assert len(shown) == 2


# ------------------------------------------------------------------------------------ compare
def test_static_compare_shows_a_spectrogram_image_and_players(static, shown):
    signals = {"clean": sine(), "noisy": torch.from_numpy(sine()) + 0.1, "quiet": 0.01 * sine()}
    view = widgets.compare(signals, SR, y_axis="mel")
    images = [x for x in shown if isinstance(x, ipd.Image)]
    audios = [x for x in shown if isinstance(x, ipd.Audio)]
    assert len(images) == 1 and images[0].data.startswith(PNG_MAGIC)
    assert [a.title for a in audios] == list(signals)
    assert shown == view.items and list(view.players) == list(signals)
    assert [ax.get_title() for ax in view.figure.axes[:3]] == list(signals)
    assert view.figure.number not in plt.get_fignums()  # closed: the inline backend won't repeat it


def test_live_compare_is_a_row_of_columns(live, shown):
    row = widgets.compare({"a": sine(), "b": 0.1 * sine()}, SR)
    assert isinstance(row, ipywidgets.HBox) and shown == [row]
    assert len(row.children) == 2
    for column, name in zip(row.children, ["a", "b"]):
        title, audio, image = column.children
        assert title.value == f"<b>{name}</b>"
        assert isinstance(audio, ipywidgets.Audio)
        assert isinstance(image, ipywidgets.Image) and bytes(image.value).startswith(PNG_MAGIC)
    assert plt.get_fignums() == []
    with pytest.raises(LabkitError, match="non-empty dict"):
        widgets.compare({}, SR)


# ------------------------------------------------------------------------------------ ab test
def test_static_ab_test_labels_players_with_names(static, shown):
    view = widgets.ab_test(sine(), np.zeros(100), SR, names=("tone", "silence"))
    assert [p.title for p in view.players.values()] == ["tone", "silence"]
    assert not any(isinstance(x, ipd.HTML) for x in shown)


@pytest.mark.parametrize("seed", range(6))
def test_static_blind_ab_test_hides_names_until_revealed(static, shown, seed):
    tone, silence = sine(), np.zeros(len(sine()))
    view = widgets.ab_test(tone, silence, SR, names=("tone", "silence"), blind=True, seed=seed)
    assert list(view.players) == ["X", "Y"] and sorted(view.answer.values()) == ["silence", "tone"]
    *players, answer = shown
    for label, p in zip(["X", "Y"], players):
        assert p.title == label and "tone" not in p._repr_html_()
        assert (np.abs(wav(p.data)[0]).max() > 0.5) == (view.answer[label] == "tone")
    assert answer.data.startswith("<details>") and answer.data.endswith("</details>")
    assert f"X = {view.answer['X']}, Y = {view.answer['Y']}" in answer.data


def test_blind_order_follows_the_seed_and_varies():
    orders = {widgets._ab_labels(("A", "B"), True, seed)[1]["X"] for seed in range(20)}
    assert orders == {"A", "B"}
    assert widgets._ab_labels(("A", "B"), True, 3) == widgets._ab_labels(("A", "B"), True, 3)
    with pytest.raises(LabkitError, match="two different names"):
        widgets._ab_labels(("A", "A"), True, 0)


def test_live_blind_ab_test_switches_guesses_and_reveals(live, shown):
    tone, silence = sine(), np.zeros(len(sine()))
    test = widgets.ab_test(tone, silence, SR, names=("tone", "silence"), blind=True, seed=0)
    assert isinstance(test, ipywidgets.VBox) and shown == [test]
    assert list(test.selector.options) == ["X", "Y"]
    texts = [getattr(w, "description", "") for w in (test.selector, test.reveal_button)]
    assert "silence" not in " ".join(texts) and test.result.value == ""
    louder = {label: np.abs(wav(test.sounds[label])[0]).max() for label in "XY"}
    tone_label = max(louder, key=louder.get)
    assert test.answer[tone_label] == "tone"
    test.select("Y")
    assert test.audio.value == test.sounds["Y"]
    test.select("X")
    assert test.audio.value == test.sounds["X"]
    test.guess(tone_label)
    text = test.reveal()
    assert text.endswith(f"Your guess {tone_label}: right.")
    assert "tone" in test.result.value and "silence" in test.result.value
    with pytest.raises(LabkitError, match=r"label 'Z' is not one of \['X', 'Y'\]"):
        test.select("Z")


# ----------------------------------------------------------------------------------- explorer
def test_live_explorer_builds_widgets_and_recomputes_on_change(live, shown):
    calls = []

    def tone(freq=440.0, harmonics=3, window="hann", loud=False, sr=SR):
        calls.append((freq, harmonics, window, loud, sr))
        return f"{freq:.0f} Hz, {harmonics} harmonics, {window}"

    explorer = widgets.explorer(tone, freq=(100.0, 1000.0, 10.0), harmonics=(1, 8),
                                window=["hamming", "hann"], loud=False, sr=SR)
    freq, harmonics = explorer.widgets["freq"], explorer.widgets["harmonics"]
    assert isinstance(freq, ipywidgets.FloatSlider) and not freq.continuous_update
    assert (freq.min, freq.max, freq.step, freq.value) == (100.0, 1000.0, 10.0, 440.0)
    assert isinstance(harmonics, ipywidgets.IntSlider) and harmonics.value == 3
    assert explorer.widgets["window"].options == ("hamming", "hann")
    assert explorer.widgets["window"].value == "hann"
    assert isinstance(explorer.widgets["loud"], ipywidgets.Checkbox)
    assert "sr" not in explorer.widgets and isinstance(explorer.output, ipywidgets.Output)
    assert calls == [(440.0, 3, "hann", False, SR)]

    freq.value = 250.0  # what a user releasing the slider does
    assert calls[-1] == (250.0, 3, "hann", False, SR)
    assert repr(shown[-1]) == "250 Hz, 3 harmonics, hann"

    explorer.update(harmonics=5, window="hamming")  # several values: one recomputation
    assert calls[-1] == (250.0, 5, "hamming", False, SR) and len(calls) == 3
    assert repr(explorer.items[0]) == "250 Hz, 5 harmonics, hamming"
    with pytest.raises(LabkitError, match=r"no parameter \['gain'\]"):
        explorer.update(gain=2)


def test_static_explorer_runs_once_at_the_defaults(static, shown):
    calls = []

    def plot(freq=300.0):
        calls.append(freq)
        fig, ax = plt.subplots()
        ax.set_title(f"{freq}")
        return {"figure": fig, "audio": (sine(freq), SR), "text": f"f = {freq}"}

    explorer = widgets.explorer(plot, freq=(100.0, 1000.0))
    assert calls == [300.0] and explorer.widgets == {}
    image, audio, text = shown
    assert image.data.startswith(PNG_MAGIC) and isinstance(audio, ipd.Audio)
    assert repr(text) == "f = 300.0" and plt.get_fignums() == []
    explorer.update(freq=500.0)
    assert calls == [300.0, 500.0] and repr(shown[-1]) == "f = 500.0"


def test_explorer_starting_values(static):
    got = {}
    widgets.explorer(lambda a, b, c, d=9: got.update(a=a, b=b, c=c, d=d),
                     a=(0, 10), b=(0.0, 1.0, 0.25, 0.75), c=["x", "y"], d=(0, 10), display=False)
    assert got == {"a": 5, "b": 0.75, "c": "x", "d": 9}
    with pytest.raises(LabkitError, match=r"a=\(5, 1\).*min < max"):
        widgets.explorer(lambda a: None, a=(5, 1))


def test_explorer_renders_figure_tuples_and_accepts_explicit_widgets(live, shown):
    slider = ipywidgets.FloatSlider(min=0.1, max=1.0, value=0.5)
    explorer = widgets.explorer(lambda gain: figures.waveform(gain * sine(), SR), gain=slider)
    assert explorer.widgets["gain"] is slider
    (image,) = explorer.items
    assert isinstance(image, ipd.Image) and plt.get_fignums() == []
    with pytest.raises(LabkitError, match="use 'figure', 'audio' and 'text'"):
        widgets.explorer(lambda: {"plot": 1})
