"""Listening and exploring in the notebooks: players, side-by-side comparisons, A/B tests, sliders.

Every helper builds its object, displays it (``display=True``) and returns it. It is shown once
per cell: a helper's result left as the last line of a cell does not appear a second time.

Two modes (:func:`mode`): **live** builds ipywidgets for JupyterLab; **static** shows plain
output (PNG images, HTML audio players, text) that needs no widget frontend, which is what a
headless run (nbval, nbclient, ``python -m labkit.course``, CI) can store and what a PDF export
can print.
"""
from __future__ import annotations

import html
import inspect
import io
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from IPython import display as ipd

from labkit.errors import AudioError, LabkitError

__all__ = [
    "ABTest", "Explorer", "StaticView", "ab_test", "compare", "explorer", "mode", "player",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# ------------------------------------------------------------------------------------- mode
def _get_ipython() -> Any:
    from IPython import get_ipython

    return get_ipython()


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (a ZMQ shell, e.g. JupyterLab, VS Code, Colab)."""
    shell = _get_ipython()
    return shell is not None and any(
        cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__
    )


def mode() -> str:
    """``"live"`` (ipywidgets) or ``"static"`` (plain output), decided in this order:

    1. ``LABKIT_STATIC=1`` forces ``"static"`` and ``LABKIT_STATIC=0`` forces ``"live"``;
    2. ``"static"`` when ``CI`` is set: notebooks executed by nbval/nbclient run in a kernel but
       have no widget frontend to draw widgets (``make course`` and the tests also set
       ``LABKIT_STATIC=1``). Fast mode alone does not switch widgets off: a student may well run
       the fast mode in JupyterLab;
    3. ``"static"`` outside a Jupyter kernel (plain Python, terminal IPython);
    4. ``"live"`` otherwise.
    """
    forced = os.environ.get("LABKIT_STATIC", "").strip().lower()
    if forced in _TRUE:
        return "static"
    if forced in _FALSE:
        return "live"
    if forced:
        raise LabkitError(f"LABKIT_STATIC={forced!r}: use 1 (static output) or 0 (live widgets)")
    if os.environ.get("CI"):
        return "static"
    return "live" if _in_kernel() else "static"


# ---------------------------------------------------------------------------- display once
def _cell() -> int | None:
    shell = _get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


class _ShownOnce:
    """Displayed by the helper that built it; the cell's own display of the returned object
    (when the call is the cell's last line) is then skipped, so it does not appear twice."""

    _skip_in_cell: int | None = None

    def _publish(self) -> None:
        raise NotImplementedError

    def _show_now(self) -> None:
        ipd.display(self)

    def _ipython_display_(self) -> None:
        cell = _cell()
        if cell is not None and self._skip_in_cell == cell:
            self._skip_in_cell = None
            return
        self._publish()


def _show(obj: _ShownOnce) -> None:
    obj._show_now()
    obj._skip_in_cell = _cell()


def _publish_widget(widget: Any) -> None:
    ipd.display(widget._repr_mimebundle_(), raw=True)


class StaticView(_ShownOnce):
    """Plain output that needs no widget frontend: a list of displayable ``items`` (images,
    audio players, HTML), shown in order. Extra keyword arguments become attributes (e.g.
    ``figure``, ``players``, ``answer``)."""

    def __init__(self, items: Sequence[Any], **attributes: Any) -> None:
        self.items = list(items)
        for key, value in attributes.items():
            setattr(self, key, value)

    def _publish(self) -> None:
        if self.items:
            ipd.display(*self.items)

    def _show_now(self) -> None:
        self._publish()

    def __repr__(self) -> str:
        return f"StaticView({len(self.items)} items)"


class _Text:
    """Text a function returned, shown as preformatted text (and plain text outside Jupyter)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.text)}</pre>"


def _figure_image(fig: Any) -> ipd.Image:
    """A PNG image of a matplotlib figure, and the figure closed: the PNG shows the same in every
    backend and frontend, and the closed figure is not shown a second time by the inline backend."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    plt.close(fig)
    return ipd.Image(data=buffer.getvalue(), format="png")


# ----------------------------------------------------------------------------------- player
def _prepare_audio(audio: Any, normalize: bool) -> np.ndarray:
    """Audio as float64 (channels, samples) in [-1, 1], ready to encode."""
    from labkit.figures import _as_channels

    samples = _as_channels(audio)
    if not np.all(np.isfinite(samples)):
        raise AudioError("audio contains NaN or infinite samples: a player cannot encode them")
    peak = float(np.max(np.abs(samples)))
    if normalize and peak > 0:  # silence stays silence instead of 0/0
        return samples / peak
    return np.clip(samples, -1.0, 1.0)  # as a sound card would


def _check_sr(sr: Any) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.number)) or not sr > 0:
        raise LabkitError(f"sr={sr!r}: the sample rate must be a positive number of Hz")
    return round(float(sr))


class _Audio(_ShownOnce, ipd.Audio):
    """An IPython Audio player with an optional title above it."""

    title: str | None = None

    def _repr_html_(self) -> str:
        player = super()._repr_html_()
        if not self.title:
            return player
        return f"<div><b>{html.escape(self.title)}</b></div>{player}"

    def _publish(self) -> None:
        ipd.display({"text/html": self._repr_html_(), "text/plain": repr(self)}, raw=True)

    def __repr__(self) -> str:
        return f"<audio player{': ' + self.title if self.title else ''}>"


def _audio(audio: Any, sr: Any, normalize: bool, title: str | None) -> _Audio:
    samples = _prepare_audio(audio, normalize)
    data = samples[0] if samples.shape[0] == 1 else samples
    player = _Audio(data=data, rate=_check_sr(sr), normalize=False)
    player.title = title
    return player


def _audio_widget(audio: Any, sr: Any, normalize: bool) -> Any:
    # Full width of its column: a fixed-width player overflows narrow columns in compare().
    return widgets.Audio(value=_audio(audio, sr, normalize, None).data, format="wav",
                         autoplay=False, loop=False, layout=widgets.Layout(width="100%"))


def _title_widget(title: str) -> Any:
    return widgets.HTML(f"<b>{html.escape(str(title))}</b>")


class _Column(_ShownOnce, widgets.VBox):
    """A VBox shown once per cell."""

    def _publish(self) -> None:
        _publish_widget(self)


class _Row(_ShownOnce, widgets.HBox):
    """An HBox shown once per cell."""

    def _publish(self) -> None:
        _publish_widget(self)


def player(audio: Any, sr: float, normalize: bool = True, title: str | None = None,
           display: bool = True) -> Any:
    """A player for ``audio`` (samples,) or (channels, samples), NumPy or torch.

    ``normalize`` scales the peak to full scale (silence stays silent); without it samples beyond
    ±1 are clipped. Static mode: an ``IPython.display.Audio`` (with ``title`` above it); live
    mode: a VBox of the title and an ``ipywidgets.Audio``. Displayed unless ``display=False``.
    """
    if mode() == "static":
        result: Any = _audio(audio, sr, normalize, title)
    else:
        children = [_title_widget(title)] if title else []
        children.append(_audio_widget(audio, sr, normalize))
        result = _Column(children=children)
        result.title = title
    if display:
        _show(result)
    return result


# ---------------------------------------------------------------------------------- compare
def compare(signals: Mapping[str, Any], sr: float, spectrograms: bool = True,
            normalize: bool = True, display: bool = True, **spectrogram_kwargs: Any) -> Any:
    """Several ``signals`` ({title: audio}) side by side, each with its title, a player and (with
    ``spectrograms``) its spectrogram, all spectrograms on one colour scale.

    Static mode: a :class:`StaticView` of one PNG of
    :func:`labkit.figures.compare_spectrograms` then one titled player per signal (attributes
    ``figure`` and ``players``). Live mode: an HBox of one VBox per signal (title, Audio widget,
    Image widget). Other keyword arguments go to :func:`labkit.figures.spectrogram`.
    """
    from labkit import figures

    if not isinstance(signals, Mapping) or not signals:
        raise LabkitError("compare: pass a non-empty dict {title: audio, ...}")
    if mode() == "static":
        items: list[Any] = []
        fig = None
        if spectrograms:
            fig, _ = figures.compare_spectrograms(signals, sr, **spectrogram_kwargs)
            items.append(_figure_image(fig))
        players = {name: _audio(x, sr, normalize, str(name)) for name, x in signals.items()}
        result: Any = StaticView(items + list(players.values()), figure=fig, players=players)
    else:
        images = {}
        if spectrograms:
            kwargs = {"figsize": (4.2, 3.0), "colorbar": False, **spectrogram_kwargs}
            plots = {name: figures.spectrogram(x, sr, title=None, **kwargs)
                     for name, x in signals.items()}
            if "vmin" not in kwargs and "vmax" not in kwargs:
                figures.share_color_scale([ax for _, ax in plots.values()],
                                          kwargs.get("db_range", 80.0))
            for name, (fig, _) in plots.items():
                png = _figure_image(fig).data
                images[name] = widgets.Image(value=png, format="png",
                                             layout=widgets.Layout(max_width="100%"))
        columns = []
        for name, x in signals.items():
            children = [_title_widget(name), _audio_widget(x, sr, normalize)]
            if name in images:
                children.append(images[name])
            columns.append(_Column(children=children,
                                  layout=widgets.Layout(flex="1 1 0", min_width="220px")))
        result = _Row(children=columns)
    if display:
        _show(result)
    return result


# ----------------------------------------------------------------------------------- ab test
def _ab_labels(names: Sequence[str], blind: bool, seed: int | None
               ) -> tuple[tuple[str, str], dict[str, str], bool]:
    """(labels shown, {label: name}, whether a and b were swapped)."""
    if len(names) != 2 or names[0] == names[1]:
        raise LabkitError(f"ab_test: names={tuple(names)!r}: give two different names")
    if not blind:
        return (names[0], names[1]), {names[0]: names[0], names[1]: names[1]}, False
    swapped = bool(np.random.default_rng(seed).random() < 0.5)
    order = (names[1], names[0]) if swapped else (names[0], names[1])
    return ("X", "Y"), {"X": order[0], "Y": order[1]}, swapped


def _answer_text(answer: Mapping[str, str]) -> str:
    return ", ".join(f"{label} = {name}" for label, name in answer.items())


class ABTest(_ShownOnce, widgets.VBox):
    """Live A/B listening: toggle which signal plays; in blind mode guess, then reveal.

    ``labels`` are the names shown (X/Y when blind); ``answer`` maps them to the real names.
    ``select(label)``, ``guess(label)`` and ``reveal()`` drive it from code.
    """

    def _publish(self) -> None:
        _publish_widget(self)

    def __init__(self, sounds: dict[str, bytes], labels: tuple[str, str],
                 answer: dict[str, str], target: str, blind: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sounds, self.labels, self.answer, self.blind = sounds, labels, answer, blind
        self.target = target
        self.selector = widgets.ToggleButtons(options=list(labels), value=labels[0],
                                              description="play")
        self.audio = widgets.Audio(value=sounds[labels[0]], format="wav", autoplay=False)
        self.selector.observe(lambda change: self._play(change["new"]), names="value")
        children: list[Any] = [self.selector, self.audio]
        self.result = widgets.HTML("")
        if blind:
            self.guesser = widgets.ToggleButtons(
                options=list(labels), value=None, description=f"{target} is",
            )
            self.reveal_button = widgets.Button(description="reveal", icon="eye")
            self.reveal_button.on_click(lambda _button: self.reveal())
            children.append(widgets.HBox([self.guesser, self.reveal_button]))
        children.append(self.result)
        self.children = children

    def _play(self, label: str) -> None:
        self.audio.value = self.sounds[label]

    def select(self, label: str) -> None:
        """Play the signal labelled ``label``."""
        self._check_label(label)
        self.selector.value = label

    def guess(self, label: str) -> None:
        """Guess (blind mode) that ``label`` is the first of the names."""
        self._check_label(label)
        if not self.blind:
            raise LabkitError("ab_test: guess() needs blind=True; the names are shown")
        self.guesser.value = label

    def reveal(self) -> str:
        """Show which label is which (and whether the guess was right); returns the text."""
        text = _answer_text(self.answer)
        if self.blind and self.guesser.value is not None:
            right = self.answer[self.guesser.value] == self.target
            text += f". Your guess {self.guesser.value}: {'right' if right else 'wrong'}."
        self.result.value = html.escape(text)
        return text

    def _check_label(self, label: str) -> None:
        if label not in self.labels:
            raise LabkitError(f"ab_test: label {label!r} is not one of {list(self.labels)}")


def ab_test(a: Any, b: Any, sr: float, names: Sequence[str] = ("A", "B"), blind: bool = False,
            seed: int | None = None, normalize: bool = True, display: bool = True) -> Any:
    """A/B listening between audio ``a`` and ``b`` (samples,) or (channels, samples).

    Each is peak-normalised unless ``normalize=False`` (so that loudness does not give it away).
    ``blind`` labels them X and Y in an order drawn from ``seed`` (random when None) and hides
    which is which. Live mode: an ``ABTest`` VBox with toggle buttons choosing what plays and, in
    blind mode, a guess and a reveal button. Static mode: a :class:`StaticView` of the two titled
    players and, when blind, the answer folded in an HTML ``<details>`` element; attributes
    ``answer`` ({label: name}) and ``players``.
    """
    labels, answer, swapped = _ab_labels(tuple(str(n) for n in names), blind, seed)
    first, second = (b, a) if swapped else (a, b)
    if mode() == "static":
        players = {labels[0]: _audio(first, sr, normalize, labels[0]),
                   labels[1]: _audio(second, sr, normalize, labels[1])}
        items: list[Any] = list(players.values())
        if blind:
            items.append(ipd.HTML(
                "<details><summary>reveal the answer</summary>"
                f"{html.escape(_answer_text(answer))}</details>"
            ))
        result: Any = StaticView(items, answer=answer, players=players, labels=labels)
    else:
        sounds = {labels[0]: _audio(first, sr, normalize, None).data,
                  labels[1]: _audio(second, sr, normalize, None).data}
        result = ABTest(sounds, labels, answer, target=str(names[0]), blind=blind)
    if display:
        _show(result)
    return result


# ---------------------------------------------------------------------------------- explorer
def _result_items(result: Any) -> list[Any]:
    """What to display for a value an explorer function returned (figures become PNGs)."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    if result is None:
        return []
    if isinstance(result, Figure):
        return [_figure_image(result)]
    if isinstance(result, Axes):
        return [_figure_image(result.figure)]
    if isinstance(result, str):
        return [_Text(result)]
    if isinstance(result, Mapping):
        unknown = set(result) - {"figure", "audio", "text"}
        if unknown:
            raise LabkitError(
                f"explorer: the function returned a dict with keys {sorted(map(str, unknown))}: "
                "use 'figure', 'audio' and 'text'"
            )
        items = _result_items(result.get("figure"))
        audio = result.get("audio")
        if isinstance(audio, Mapping):  # {title: (array, sr)}
            for title, value in audio.items():
                items += _audio_items(value, str(title))
        elif audio is not None:
            items += _audio_items(audio, None)
        if result.get("text") is not None:
            items.append(_Text(str(result["text"])))
        return items
    if isinstance(result, tuple) and result and isinstance(result[0], Figure):
        return [_figure_image(result[0])]  # the (fig, ax) of a labkit.figures helper
    if _is_audio_pair(result):
        return _audio_items(result, None)
    if isinstance(result, (list, tuple)):
        return [item for part in result for item in _result_items(part)]
    return [result]


def _is_audio_pair(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) == 2 and hasattr(value[0], "shape")
            and isinstance(value[1], (int, float, np.number)) and not isinstance(value[1], bool))


def _audio_items(value: Any, title: str | None) -> list[Any]:
    if isinstance(value, ipd.Audio):
        return [value]
    if _is_audio_pair(value):
        return [_audio(value[0], value[1], True, title)]
    raise LabkitError(
        f"explorer: audio is {type(value).__name__}: give (array, sr) or an IPython Audio"
    )


class _Param:
    """One explorer parameter: a widget, or a fixed value."""

    def __init__(self, name: str, spec: Any, default: Any) -> None:
        self.name, self.widget, self.kind = name, None, "fixed"
        self.options: list[Any] = []
        if _is_widget(spec):
            self.kind, self.widget, self.value = "widget", spec, spec.value
        elif isinstance(spec, tuple) and len(spec) in (2, 3, 4) and all(
            isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in spec
        ):
            self._slider(spec, default)
        elif isinstance(spec, (list, Mapping)):
            options = list(spec.values()) if isinstance(spec, Mapping) else list(spec)
            if not options:
                raise LabkitError(f"explorer: {name}=[] has no options to choose from")
            self.kind, self.labels = "dropdown", spec
            self.options = options
            self.value = default if any(default is o or default == o for o in options) else options[0]
        elif isinstance(spec, bool):
            self.kind, self.value = "checkbox", spec
        else:
            self.value = spec
            if type(spec).__name__ == "fixed" and hasattr(spec, "value"):  # ipywidgets.fixed
                self.value = spec.value

    def _slider(self, spec: tuple, default: Any) -> None:
        low, high = spec[0], spec[1]
        integer = all(isinstance(v, (int, np.integer)) for v in spec[:3])
        step = spec[2] if len(spec) >= 3 else (1 if integer else (high - low) / 100)
        if not low < high or not step > 0:
            raise LabkitError(
                f"explorer: {self.name}={spec!r}: a slider needs (min, max[, step[, value]]) with "
                "min < max and step > 0"
            )
        if len(spec) == 4:
            default = spec[3]
        if not (isinstance(default, (int, float, np.number)) and low <= default <= high):
            default = low + round((high - low) / 2 / step) * step  # the middle, on a step
        self.kind = "int" if integer else "float"
        self.low, self.high, self.step = low, high, step
        self.value = int(default) if integer else float(default)

    def build(self) -> Any:
        common = {"description": self.name, "style": {"description_width": "initial"}}
        if self.kind in ("int", "float"):
            cls = widgets.IntSlider if self.kind == "int" else widgets.FloatSlider
            self.widget = cls(min=self.low, max=self.high, step=self.step, value=self.value,
                              continuous_update=False, **common)
        elif self.kind == "dropdown":
            options = list(self.labels.items()) if isinstance(self.labels, Mapping) else self.options
            self.widget = widgets.Dropdown(options=options, value=self.value, **common)
        elif self.kind == "checkbox":
            self.widget = widgets.Checkbox(value=self.value, **common)
        return self.widget


def _is_widget(value: Any) -> bool:
    return (hasattr(value, "observe") and hasattr(value, "value")
            and type(value).__module__.startswith("ipywidgets"))


class Explorer(_ShownOnce):
    """A function re-run as its parameters change; built by :func:`explorer`.

    ``widgets`` ({name: widget}, live mode only), ``values`` (the current arguments), ``result``
    (what the function last returned), ``items`` (what was last displayed), ``output`` (the live
    Output widget) and ``panel`` (the live VBox). ``update(name=value, ...)`` sets values and
    recomputes once.
    """

    def __init__(self, fn: Callable[..., Any], params: dict[str, Any], live: bool) -> None:
        self.fn, self.live = fn, live
        signature_defaults = _defaults(fn)
        self._params = {name: _Param(name, spec, signature_defaults.get(name))
                        for name, spec in params.items()}
        self.widgets: dict[str, Any] = {}
        self.output = self.panel = None
        self.result: Any = None
        self.items: list[Any] = []
        self._holding = False
        if live:
            for name, param in self._params.items():
                widget = param.build()
                if widget is not None:
                    self.widgets[name] = widget
                    widget.observe(self._changed, names="value")
            self.output = widgets.Output()
            self.panel = widgets.VBox([widgets.VBox(list(self.widgets.values())), self.output])
        self.render()

    @property
    def values(self) -> dict[str, Any]:
        """The arguments the function gets now."""
        return {name: (self.widgets[name].value if name in self.widgets else param.value)
                for name, param in self._params.items()}

    def _changed(self, _change: Any) -> None:
        if not self._holding:
            self.render()

    def render(self) -> Any:
        """Call the function with :attr:`values`, show what it returns; returns the result."""
        self.result = self.fn(**self.values)
        self.items = _result_items(self.result)
        if self.output is not None:
            self.output.clear_output(wait=True)
            with self.output:
                for item in self.items:
                    ipd.display(item)
        return self.result

    def update(self, **values: Any) -> Any:
        """Set parameters (by name) and recompute once; static mode displays the new result.
        Returns the function's result."""
        unknown = set(values) - set(self._params)
        if unknown:
            raise LabkitError(
                f"explorer: no parameter {sorted(unknown)}; it has {sorted(self._params)}"
            )
        self._holding = True
        try:
            for name, value in values.items():
                if name in self.widgets:
                    self.widgets[name].value = value
                else:
                    self._params[name].value = value
        finally:
            self._holding = False
        result = self.render()
        if not self.live:
            self._publish()
        return result

    def _publish(self) -> None:
        if self.live:
            _publish_widget(self.panel)
        elif self.items:
            ipd.display(*self.items)

    def _show_now(self) -> None:
        if self.live:
            ipd.display(self.panel)
        else:
            self._publish()

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", "function")
        return f"Explorer({name}, {self.values})"


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def explorer(fn: Callable[..., Any], /, display: bool = True, **params: Any) -> Explorer:
    """Explore ``fn`` by moving sliders: ``explorer(fn, cutoff=(100, 8000, 100), window=["hann",
    "hamming"], sr=16000)``.

    Each keyword names an argument of ``fn`` and says how to vary it:

    - ``(min, max)``, ``(min, max, step)`` or ``(min, max, step, value)``: a slider (integer
      when all are integers), starting at ``value``, else at ``fn``'s default, else the middle;
    - a list (or a dict {label: value}): a dropdown, starting at ``fn``'s default or the first;
    - ``True``/``False``: a checkbox;
    - an ipywidgets widget: used as it is;
    - any other value (or ``ipywidgets.fixed(value)``): passed unchanged.

    ``fn(**values)`` may return a matplotlib figure (or a ``(fig, ax)``), an IPython Audio, an
    ``(array, sr)`` pair, a string, or a dict ``{"figure": ..., "audio": (array, sr) or Audio or
    {title: (array, sr)}, "text": str}``. Live mode: the widgets over an Output that re-renders
    when a value is released (``continuous_update=False``). Static mode: ``fn`` runs once at the
    starting values and its result is displayed. Returns an :class:`Explorer`.
    """
    if not callable(fn):
        raise LabkitError(f"explorer: fn is {type(fn).__name__}: pass the function to explore")
    result = Explorer(fn, params, live=mode() == "live")
    if display:
        _show(result)
    return result
