"""Fitting Gabor atoms to a sound by gradient descent: initialisation, losses, growth, pruning.

:func:`fit` takes mono audio and a :class:`FitConfig` and returns a :class:`FitResult` holding a
:class:`~labkit.models.atoms.GaborAtoms` model and the loss history. The recipe:

1. **Initialise** ``n_atoms`` atoms (:func:`initial_params`): ``"peaks"`` puts one atom on each
   of the strongest spectral peaks of an STFT (frequency refined by parabolic interpolation,
   phase read from the STFT and moved to the atom's centre, amplitude from the peak height),
   ``"random"`` draws everything at random, ``"uniform"`` lays a regular time-frequency grid.
   A least-squares gain then scales all amplitudes at once.
2. **Optimise** with Adam. Parameters live in different units (seconds, Hz, radians), so each
   gets its own learning rate: ``lr`` times :data:`LR_SCALES` (e.g. ``lr=0.01`` moves a
   frequency by about 1 Hz per step and a centre by 0.1 ms). The learning rate follows a cosine
   decay to zero unless ``schedule="constant"``. After each step the model is projected back to
   valid values (:meth:`~labkit.models.atoms.GaborAtoms.project_`).
3. **Grow and prune** (optional): at the steps in ``grow_at`` atoms weaker than ``prune_below``
   times the mean atom energy are removed and ``grow_by`` new atoms are placed on the strongest
   spectral peaks of the *residual* (what the atoms do not explain yet).
4. **Losses** (:func:`loss_fn`), all normalised so that 1.0 means "as bad as silence": ``"l2"``
   (squared error over the signal's energy; ``-10 log10`` of it is the SNR), ``"l1"`` and
   ``"spectral"`` (multi-resolution STFT magnitude: spectral convergence plus log-magnitude
   distance). ``mix`` blends in a second term: the spectral loss for ``"l1"``/``"l2"``, the L2
   loss for ``"spectral"`` (a magnitude loss alone leaves phases free, which SNR punishes).

:func:`refit_quantized` is the quantization-aware step of the codec: it quantizes the structural
parameters (centre, width, frequency, chirp), freezes them, and refits amplitudes and phases so
that they make up for the rounding before they are quantized in turn.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from labkit.errors import LabkitError
from labkit.models.atoms import PARAMETER_NAMES, GaborAtoms, atom_energy, render_atoms

__all__ = [
    "INIT_METHODS", "LOSSES", "LR_SCALES", "PRESETS", "FitConfig", "FitResult", "fit",
    "initial_params", "loss_fn", "preset", "refit_quantized", "residual_peaks", "spectral_loss",
]

INIT_METHODS: tuple[str, ...] = ("peaks", "random", "uniform")
LOSSES: tuple[str, ...] = ("l2", "l1", "spectral")

#: What ``lr = 1`` means for each parameter, in its own unit (Adam's steps are about ``lr`` in
#: size whatever the gradient's scale, so these set how far each parameter moves per step).
#: Amplitude is relative to the signal's peak; ``log_width`` is relative (0.01 = 1 %).
LR_SCALES: dict[str, float] = {
    "amplitude": 1.0, "centre": 0.01, "log_width": 1.0, "frequency": 100.0, "phase": 10.0,
    "chirp_rate": 1000.0,
}


@dataclass
class FitConfig:
    """Everything a fit depends on (all plain values, so it is saved as YAML with each run).

    ``n_atoms`` atoms to start with, ``steps`` Adam steps at learning rate ``lr`` (see
    :data:`LR_SCALES`) with ``schedule`` ``"cosine"`` or ``"constant"``; ``init`` one of
    :data:`INIT_METHODS` with an STFT window of ``init_window`` seconds (peaks, growth);
    ``loss`` one of :data:`LOSSES` mixed with ``mix`` of the other term (module docstring);
    ``grow_at`` steps at which ``grow_by`` atoms (default ``n_atoms // 10``) are added on the
    residual's peaks after pruning atoms weaker than ``prune_below`` x the mean atom energy;
    ``chirp`` adds a chirp rate per atom; widths stay within ``[min_width, max_width]`` seconds.
    """

    n_atoms: int = 1000
    steps: int = 2000
    lr: float = 0.01
    schedule: str = "cosine"
    init: str = "peaks"
    init_window: float = 0.064
    loss: str = "l2"
    mix: float = 0.0
    grow_at: tuple[int, ...] = ()
    grow_by: int | None = None
    prune_below: float = 0.0
    chirp: bool = False
    min_width: float = 0.0005
    max_width: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        self.grow_at = tuple(int(s) for s in (self.grow_at or ()))
        if self.init not in INIT_METHODS:
            raise LabkitError(f"init={self.init!r}: use one of {', '.join(INIT_METHODS)}")
        if self.loss not in LOSSES:
            raise LabkitError(f"loss={self.loss!r}: use one of {', '.join(LOSSES)}")
        if self.schedule not in ("cosine", "constant"):
            raise LabkitError(f"schedule={self.schedule!r}: use 'cosine' or 'constant'")
        if not 0.0 <= self.mix <= 1.0:
            raise LabkitError(f"mix={self.mix!r}: expected a weight in [0, 1]")
        if self.n_atoms < 1 or self.steps < 0 or not self.lr > 0:
            raise LabkitError(f"n_atoms={self.n_atoms}, steps={self.steps}, lr={self.lr}: expected "
                              "at least one atom, steps >= 0 and a positive learning rate")
        if self.grow_by is not None and self.grow_by < 0:
            raise LabkitError(f"grow_by={self.grow_by!r}: expected a number of atoms >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain values (tuples become lists), e.g. for YAML."""
        out = asdict(self)
        out["grow_at"] = list(self.grow_at)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FitConfig:
        """A config from :meth:`to_dict`'s output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise LabkitError(f"FitConfig: unknown setting(s) {sorted(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
        return cls(**dict(values))


#: Starting points for three kinds of sound (measured on the course's 5 s, 16 kHz clips).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Speech: a 64 ms analysis window gave the best start (32 and 128 ms were worse); growing
    # 4 x 15 % on the residual and pruning weak atoms beat the same number of atoms placed at
    # once by 1.8 dB (17.8 vs 15.9 dB after quantization at 16 kbit/s).
    "speech": {"n_atoms": 2000, "steps": 600, "init_window": 0.064,
               "grow_at": (100, 200, 300, 400), "grow_by": 300, "prune_below": 0.05},
    # Music (the music-like clip): steadier partials, so a 128 ms window and atoms up to 100 ms;
    # the same growth: 20.2 dB at 6.7 kbit/s against 20.9 dB at 10.4 kbit/s with the speech preset.
    "music": {"n_atoms": 2000, "steps": 600, "init_window": 0.128, "max_width": 0.1,
              "grow_at": (100, 200, 300, 400), "grow_by": 300, "prune_below": 0.05},
}


def preset(name: str = "default", **overrides: Any) -> FitConfig:
    """The :class:`FitConfig` of preset ``name`` (:data:`PRESETS`) with ``overrides`` applied."""
    if name not in PRESETS:
        raise LabkitError(f"preset {name!r} is not known; use one of {', '.join(PRESETS)}")
    return FitConfig(**{**PRESETS[name], **overrides})


@dataclass
class FitResult:
    """A fit's outcome: the ``model``, its ``history`` (lists by step: ``step``, ``loss``,
    ``snr`` (dB), ``n_atoms``; ``grow_steps``), the ``config`` and ``seconds`` of wall time."""

    model: GaborAtoms
    history: dict[str, list]
    config: FitConfig
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- initialisation
def _mono(audio: Any) -> Tensor:
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, Tensor)
                        else audio.float())
    if x.ndim == 2:
        if x.shape[0] != 1:
            raise LabkitError(f"audio has shape {tuple(x.shape)}: atoms fit one channel; pass "
                              "labkit.audio.to_mono(audio)")
        x = x[0]
    if x.ndim != 1 or x.shape[0] < 2:
        raise LabkitError(f"audio has shape {tuple(x.shape)}; expected (1, samples) or (samples,)")
    return x.detach()


def _stft_setup(window_seconds: float, sr: int) -> tuple[int, int]:
    n_fft = 2 ** max(4, round(math.log2(window_seconds * sr)))
    return n_fft, n_fft // 4


def residual_peaks(signal: Tensor, sr: int, count: int, window: float = 0.064
                   ) -> dict[str, Tensor]:
    """Atoms on the ``count`` strongest spectral peaks of ``signal`` ``(samples,)``.

    A peak is a bin larger than its two frequency neighbours in one STFT frame (Hann window of
    ``window`` seconds rounded to a power of two, hop a quarter of it). Each atom gets the
    frame's centre time, the parabolically interpolated peak frequency, the STFT phase moved
    from the frame start to its centre, a width of a sixth of the window, and the amplitude
    that makes overlapping atoms along a steady sinusoid add up to the sinusoid's amplitude.
    Returns parameters (natural units, ``(count',)`` with ``count' <= count``).
    """
    from labkit.spectral import stft

    n_fft, hop = _stft_setup(window, sr)
    n_fft = min(n_fft, 2 ** int(math.log2(max(signal.shape[0] - 1, 16))))
    hop = n_fft // 4
    spec = stft(signal, n_fft, hop, pad_mode="constant")
    mag = spec.abs()
    lower = torch.nn.functional.pad(mag, (0, 0, 1, 0))[:-1]
    upper = torch.nn.functional.pad(mag, (0, 0, 0, 1))[1:]
    peak = (mag > lower) & (mag >= upper)
    peak[0] = False
    score = torch.where(peak, mag, torch.zeros_like(mag)).flatten()
    count = min(count, int((score > 0).sum()))
    top = torch.topk(score, count).indices
    bins, frames = top // mag.shape[1], top % mag.shape[1]
    last = mag.shape[0] - 1
    log_mag = mag.clamp_min(1e-12).log()
    la, lb = log_mag[(bins - 1).clamp(0, last), frames], log_mag[bins, frames]
    lc = log_mag[(bins + 1).clamp(0, last), frames]
    curvature = la - 2 * lb + lc
    delta = torch.where(curvature.abs() > 1e-9, 0.5 * (la - lc) / curvature,
                        torch.zeros_like(curvature)).clamp(-0.5, 0.5)
    width = n_fft / sr / 6
    # Frame t is centred on sample t * hop; the STFT's phase refers to the frame's first sample,
    # half a window earlier: bin k turns by pi * k over that half window.
    phase = spec[bins, frames].angle() + math.pi * (bins + delta)
    # A sinusoid of amplitude A peaks at A * n_fft / 4 in a Hann-windowed STFT; atoms every
    # `hop` samples with Gaussian envelopes of width w add up to sqrt(2 pi) w sr / hop times one.
    amplitude = 4 * mag[bins, frames] / n_fft * hop / (width * sr * math.sqrt(2 * math.pi))
    return {
        "amplitude": amplitude.float(),
        "centre": (frames * hop / sr).float(),
        "width": torch.full((count,), width),
        "frequency": ((bins + delta) * sr / n_fft).float(),
        "phase": phase.float(),
        "chirp": torch.zeros(count),
    }


def initial_params(audio: Any, sr: int, n_atoms: int, method: str = "peaks",
                   window: float = 0.064, seed: int = 0) -> dict[str, Tensor]:
    """Starting parameters of ``n_atoms`` atoms for ``audio`` ``(1, samples)`` or ``(samples,)``.

    ``method``: ``"peaks"`` (:func:`residual_peaks` of the signal itself; filled up with random
    atoms when the signal has fewer peaks), ``"random"`` (uniform centres and frequencies up to
    ``sr / 2``, widths log-uniform between 2 and 20 ms, random phases) or ``"uniform"`` (a grid of
    centres x frequencies, about as many columns per second as rows per kHz). Amplitudes of
    random and uniform atoms start small (a tenth of the signal's RMS).
    """
    if method not in INIT_METHODS:
        raise LabkitError(f"init method {method!r}: use one of {', '.join(INIT_METHODS)}")
    x = _mono(audio)
    duration = x.shape[0] / sr
    generator = torch.Generator().manual_seed(seed)
    rms = float(x.pow(2).mean().sqrt()) or 1e-3
    if method == "peaks":
        params = residual_peaks(x, sr, n_atoms, window)
        missing = n_atoms - params["amplitude"].shape[0]
        if missing > 0:
            extra = initial_params(x, sr, missing, "random", window, seed)
            params = {k: torch.cat([params[k], extra[k]]) for k in PARAMETER_NAMES}
        return params
    if method == "random":
        width = torch.exp(torch.empty(n_atoms).uniform_(math.log(0.002), math.log(0.02),
                                                        generator=generator))
        return {
            "amplitude": torch.full((n_atoms,), 0.1 * rms),
            "centre": torch.rand(n_atoms, generator=generator) * duration,
            "width": width,
            "frequency": torch.rand(n_atoms, generator=generator) * (sr / 2),
            "phase": (torch.rand(n_atoms, generator=generator) * 2 - 1) * math.pi,
            "chirp": torch.zeros(n_atoms),
        }
    # uniform: columns (time) x rows (frequency) with columns / duration ~ rows / (sr / 2000)
    columns = max(1, round(math.sqrt(n_atoms * duration / (sr / 2000))))
    rows = math.ceil(n_atoms / columns)
    t = (torch.arange(columns) + 0.5) * duration / columns
    f = (torch.arange(rows) + 0.5) * (sr / 2) / rows
    grid_t, grid_f = (g.reshape(-1)[:n_atoms] for g in torch.meshgrid(t, f, indexing="ij"))
    return {
        "amplitude": torch.full((n_atoms,), 0.1 * rms),
        "centre": grid_t.float(),
        "width": torch.full((n_atoms,), min(max(duration / columns / 2, 0.001), 0.05)),
        "frequency": grid_f.float(),
        "phase": torch.zeros(n_atoms),
        "chirp": torch.zeros(n_atoms),
    }


# --------------------------------------------------------------------------- losses
def spectral_loss(estimate: Tensor, target: Tensor, sr: int,
                  windows: Sequence[float] = (0.016, 0.032, 0.064, 0.128)) -> Tensor:
    """Multi-resolution STFT loss of ``estimate`` against ``target`` (both ``(samples,)``).

    Mean over resolutions (Hann windows of ``windows`` seconds, hop a quarter) of spectral
    convergence ``||S_e| - |S_t||_F / ||S_t||_F`` plus the mean absolute difference of
    ``log(|S| + eps)`` with ``eps`` 1e-4 of the target's largest magnitude.
    """
    from labkit.spectral import stft

    total = estimate.new_zeros(())
    for seconds in windows:
        n_fft, hop = _stft_setup(seconds, sr)
        if n_fft >= target.shape[-1]:
            continue
        mag_t = stft(target, n_fft, hop).abs()
        mag_e = stft(estimate, n_fft, hop).abs()
        eps = 1e-4 * float(mag_t.max()) + 1e-12
        convergence = torch.linalg.vector_norm(mag_e - mag_t) / (
            torch.linalg.vector_norm(mag_t) + 1e-12)
        log_distance = (torch.log(mag_e + eps) - torch.log(mag_t + eps)).abs().mean()
        total = total + convergence + log_distance
    return total / len(windows)


def loss_fn(estimate: Tensor, target: Tensor, sr: int, loss: str = "l2",
            mix: float = 0.0) -> Tensor:
    """The fitting loss of ``estimate`` against ``target`` ``(samples,)`` (module docstring).

    ``(1 - mix) * primary + mix * secondary``; primary is ``loss``, secondary the spectral loss
    for ``"l1"``/``"l2"`` and L2 for ``"spectral"``. L2 is ``||e - t||^2 / ||t||^2``, L1 is
    ``||e - t||_1 / ||t||_1``.
    """
    def l2() -> Tensor:
        return (estimate - target).pow(2).sum() / (target.pow(2).sum() + 1e-12)

    def l1() -> Tensor:
        return (estimate - target).abs().sum() / (target.abs().sum() + 1e-12)

    if loss not in LOSSES:
        raise LabkitError(f"loss={loss!r}: use one of {', '.join(LOSSES)}")
    terms = {"l2": l2, "l1": l1, "spectral": lambda: spectral_loss(estimate, target, sr)}
    secondary = "l2" if loss == "spectral" else "spectral"
    value = terms[loss]() if mix < 1 else estimate.new_zeros(())
    if mix > 0:
        value = (1 - mix) * value + mix * terms[secondary]()
    return value


# --------------------------------------------------------------------------- optimisation
def _optimizer(model: GaborAtoms, lr: float, peak: float) -> torch.optim.Adam:
    """Adam with one parameter group per atom parameter, each at ``lr`` x its LR_SCALES entry
    (amplitudes also x the signal's peak); ``group["scale"]`` keeps that factor for schedules."""
    groups = []
    for name, parameter in model.named_parameters():
        scale = LR_SCALES[name] * (peak if name == "amplitude" else 1.0)
        groups.append({"params": [parameter], "lr": lr * scale, "scale": scale})
    return torch.optim.Adam(groups)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["scale"]


def _schedule(lr: float, step: int, steps: int, kind: str) -> float:
    if kind == "constant" or steps <= 1:
        return lr
    return lr * 0.5 * (1 + math.cos(math.pi * step / steps))


def _model_options(config: FitConfig) -> dict[str, Any]:
    return {"chirp": config.chirp, "min_width": config.min_width, "max_width": config.max_width}


def _least_squares_gain(model: GaborAtoms, x: Tensor) -> None:
    with torch.no_grad():
        y = model()[0]
        energy = float(y @ y)
        if energy > 0:
            model.amplitude.mul_(max(float(x @ y) / energy, 0.0))
        model.project_()


def _grow(model: GaborAtoms, x: Tensor, config: FitConfig, grow_by: int) -> GaborAtoms:
    """Prune weak atoms, then add ``grow_by`` atoms on the residual's spectral peaks."""
    params = model.params()
    if config.prune_below > 0 and params["amplitude"].shape[0] > 1:
        energy = atom_energy(params["amplitude"], params["width"])
        keep = energy >= config.prune_below * energy.mean()
        params = {k: v[keep] for k, v in params.items()}
    if grow_by > 0:
        with torch.no_grad():
            residual = x - model()[0]
        new = residual_peaks(residual, model.sample_rate, grow_by, config.init_window)
        params = {k: torch.cat([params[k], new[k]]) for k in PARAMETER_NAMES}
    return GaborAtoms.from_params(params, model.sample_rate, model.length, **_model_options(config))


def fit(audio: Any, sr: int, config: FitConfig | None = None, progress: bool = True,
        callback: Callable[[int, GaborAtoms, dict[str, list]], None] | None = None,
        model: GaborAtoms | None = None, **overrides: Any) -> FitResult:
    """Fit Gabor atoms to ``audio`` (mono, ``(1, samples)`` or ``(samples,)``) at ``sr`` Hz.

    ``config`` (default :func:`preset` ``"default"``) with ``overrides`` applied, e.g.
    ``fit(x, sr, n_atoms=300, steps=500)``. ``model`` continues from existing atoms instead of
    initialising new ones. ``callback(step, model, history)`` runs after every step (a run
    folder uses it to write checkpoints). Returns a :class:`FitResult`; the model is on the CPU.
    The history's ``snr`` is ``-10 log10`` of the normalised L2 error, whatever the loss.
    """
    config = replace(config, **overrides) if config is not None else preset("default", **overrides)
    x = _mono(audio)
    seed_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        return _fit(x, int(sr), config, progress, callback, model)
    finally:
        torch.random.set_rng_state(seed_state)


def _fit(x: Tensor, sr: int, config: FitConfig, progress: bool,
         callback: Callable[[int, GaborAtoms, dict[str, list]], None] | None,
         model: GaborAtoms | None) -> FitResult:
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if model is None:
        params = initial_params(x, sr, config.n_atoms, config.init, config.init_window,
                                config.seed)
        model = GaborAtoms.from_params(params, sr, x.shape[0], **_model_options(config))
        _least_squares_gain(model, x)
    elif model.length != x.shape[0] or model.sample_rate != sr:
        raise LabkitError(f"model holds {model.length} samples at {model.sample_rate} Hz but the "
                          f"audio has {x.shape[0]} at {sr} Hz")
    peak = float(x.abs().max()) or 1.0
    energy = float(x.pow(2).sum()) or 1.0
    optimizer = _optimizer(model, config.lr, peak)
    grow_by = config.grow_by if config.grow_by is not None else max(1, config.n_atoms // 10)
    history: dict[str, list] = {"step": [], "loss": [], "snr": [], "n_atoms": [],
                                "grow_steps": []}
    bar = tqdm(range(config.steps), desc="fitting atoms", disable=not progress, leave=False)
    for step in bar:
        if step in config.grow_at and step > 0:
            model = _grow(model, x, config, grow_by)
            optimizer = _optimizer(model, config.lr, peak)
            history["grow_steps"].append(step)
        _set_lr(optimizer, _schedule(config.lr, step, config.steps, config.schedule))
        optimizer.zero_grad(set_to_none=True)
        y = model()[0]
        loss = loss_fn(y, x, sr, config.loss, config.mix)
        loss.backward()
        optimizer.step()
        model.project_()
        loss_value = loss.item()
        with torch.no_grad():
            error = float((y.detach() - x).pow(2).sum()) / energy
        snr = -10 * math.log10(max(error, 1e-30))
        if not math.isfinite(loss_value):
            raise LabkitError(f"the loss became {loss_value} at step {step}; lower lr "
                              f"(now {config.lr})")
        for key, value in (("step", step), ("loss", loss_value), ("snr", snr),
                           ("n_atoms", model.n_atoms)):
            history[key].append(value)
        if progress and step % 20 == 0:
            bar.set_postfix(snr=f"{snr:.2f} dB", atoms=model.n_atoms)
        if callback is not None:
            callback(step, model, history)
    return FitResult(model.eval(), history, config, time.perf_counter() - start)


# --------------------------------------------------------------------------- quantization-aware
def refit_quantized(model: GaborAtoms, audio: Any, bits: int | Mapping[str, int] = 8,
                    steps: int = 200, lr: float = 0.002, progress: bool = False,
                    ) -> tuple[dict[str, Tensor], dict[str, tuple[float, float]]]:
    """Quantization-aware refit: freeze the structure on the codec's grid, refit amplitudes and
    phases *through* their quantizer.

    All parameters are quantized with :func:`labkit.atoms.codec.quantize` (``bits``). Centre,
    width, frequency (and chirp) stay frozen at their grid values; amplitudes and phases are
    optimised for ``steps`` Adam steps on the L2 loss while the forward pass uses their rounded
    values (:func:`labkit.atoms.codec.fake_quantize`, gradients passed straight through), so the
    loss is the loss of what will be stored. Returns ``(params, ranges)``: the atoms (sorted by
    centre, zero-amplitude ones dropped; every value on the grid) and the quantizer ranges, to
    pass to :func:`labkit.atoms.codec.encode` as ``ranges`` so the file stores exactly these.
    """
    from tqdm.auto import tqdm

    from labkit.atoms import codec

    x = _mono(audio)
    sr, length = model.sample_rate, model.length
    q = codec.quantize(model.params(), sr, length, bits)
    ranges = dict(q.ranges)
    params = codec.dequantize(q)
    if steps <= 0 or q.n_atoms == 0:
        return params, ranges
    amp_bits, phase_bits = q.bits["amplitude"], q.bits["phase"]
    amp_range = ranges["amplitude"]
    amplitude = params["amplitude"].clone().requires_grad_(True)
    phase = params["phase"].clone().requires_grad_(True)
    peak = float(x.abs().max()) or 1.0
    optimizer = torch.optim.Adam([
        {"params": [amplitude], "lr": lr * LR_SCALES["amplitude"] * peak,
         "scale": LR_SCALES["amplitude"] * peak},
        {"params": [phase], "lr": lr * LR_SCALES["phase"], "scale": LR_SCALES["phase"]},
    ])
    frozen = {name: params[name] for name in ("centre", "width", "frequency", "chirp")}
    energy = float(x.pow(2).sum()) or 1.0
    best = (math.inf, amplitude.detach().clone(), phase.detach().clone())

    def stored(a: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return (codec.fake_quantize(a, "amplitude", amp_bits, *amp_range),
                codec.fake_quantize(p, "phase", phase_bits))

    for step in tqdm(range(steps + 1), desc="refitting", disable=not progress, leave=False):
        a, p = stored(amplitude, phase)
        y = render_atoms(a, frozen["centre"], frozen["width"], frozen["frequency"], p, sr, length,
                         frozen["chirp"], model.support)
        loss = (y - x).pow(2).sum() / energy
        if loss.item() < best[0]:  # the rounded state actually evaluated: keep the best one
            best = (loss.item(), a.detach().clone(), p.detach().clone())
        if step == steps:
            break
        _set_lr(optimizer, _schedule(lr, step, steps, "cosine"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            amplitude.clamp_(min=math.exp(amp_range[0]), max=math.exp(amp_range[1]))
    out = dict(params)
    out["amplitude"], out["phase"] = best[1], best[2]
    return out, ranges
