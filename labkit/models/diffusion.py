"""Conditional diffusion on spectrogram features: schedules, samplers, guidance, the denoiser.

The pieces of a denoising diffusion model (Ho et al. 2020; Song et al. 2021), small enough to read
in one sitting and to train on a CPU, as notebook 05 uses them for audio super-resolution:

- **noise schedules** (:func:`alpha_bar_schedule`, :class:`NoiseSchedule`): ``linear`` betas (DDPM)
  or the ``cosine`` schedule of Nichol & Dhariwal (2021), with ``timesteps`` steps (default 1000);
- **the forward process** :func:`q_sample`: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``;
- **what the network predicts**: the noise ``eps`` or the velocity
  ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0`` (Salimans & Ho 2022); :func:`to_x0_eps`
  converts either back to ``(x_0, eps)``;
- **samplers**: ancestral DDPM (:func:`ddpm_step`, :func:`ddpm_sample`) over all timesteps, and
  DDIM (:func:`ddim_step`, :func:`ddim_sample`) over ``steps`` of them, deterministic with
  ``eta = 0``; with ``eta = 1`` DDIM on every timestep *is* DDPM (tested);
- **classifier-free guidance** (Ho & Salimans 2021): the network is trained with its condition
  replaced by a learned "null" condition a fraction of the time, and sampling mixes the two
  predictions, :func:`apply_guidance` ``= uncond + scale * (cond - uncond)``;
- **the denoiser** :class:`SpectralDenoiser`: a dilated convolution net over time that treats the
  frequency bins as channels (every output bin sees every input bin of ~0.7 s of context);
- **the model** :class:`SuperResDiffusion` (registered as ``"superres_diffusion"``): the denoiser,
  the schedule and the spectrogram settings of audio super-resolution in one module, so that a
  checkpoint rebuilds everything inference needs;
- **the inspector** :func:`inspect_model`: parameters per block and the measured receptive field.

Shapes: spectrogram features are ``(batch, 1, bins, frames)``; timesteps ``t`` are integer
tensors ``(batch,)`` indexing ``0 .. timesteps - 1`` (index ``t`` holds ``abar`` of the paper's
step ``t + 1``; ``abar`` of "step 0" is 1).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from labkit.errors import LabkitError
from labkit.models import register_model

__all__ = [
    "PREDICTIONS", "SCHEDULES", "ModelReport", "NoiseSchedule", "SpectralDenoiser",
    "SuperResDiffusion", "alpha_bar_schedule", "apply_guidance", "cosine_alpha_bar",
    "ddim_sample", "ddim_step", "ddim_timesteps", "ddpm_sample", "ddpm_step",
    "gaussian_mixture_eps", "inspect_model",
    "linear_alpha_bar", "q_sample", "receptive_field", "timestep_embedding", "to_x0_eps",
    "training_target",
]

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")

ModelFn = Callable[[Tensor, Tensor], Tensor]
"""``model_fn(x_t, t) -> prediction`` (eps or v, same shape as ``x_t``) that samplers call."""


# ------------------------------------------------------------------------------ schedules
def linear_alpha_bar(timesteps: int = 1000, beta_start: float = 1e-4,
                     beta_end: float = 0.02) -> Tensor:
    """``abar_t = prod_{s<=t} (1 - beta_s)`` for betas rising linearly (DDPM), float64 ``(T,)``.

    ``beta_start`` and ``beta_end`` are the DDPM values for 1000 steps; they are scaled by
    ``1000 / timesteps`` so that a shorter chain still ends in (almost) pure noise.
    """
    _check_timesteps(timesteps)
    scale = 1000.0 / timesteps
    betas = torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), timesteps,
                           dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def cosine_alpha_bar(timesteps: int = 1000, s: float = 0.008) -> Tensor:
    """The cosine schedule (Nichol & Dhariwal 2021) as float64 ``(T,)``.

    ``abar_t = f(t) / f(0)`` with ``f(t) = cos((t / T + s) / (1 + s) * pi / 2) ** 2`` for
    ``t = 1 .. T``; each step's ``beta_t = 1 - abar_t / abar_{t-1}`` is clipped to at most 0.999
    (so the last ``abar`` is tiny but not exactly 0).
    """
    _check_timesteps(timesteps)
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos((steps / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    return torch.cumprod(1.0 - betas, dim=0)


def alpha_bar_schedule(kind: str = "cosine", timesteps: int = 1000) -> Tensor:
    """``abar`` of schedule ``kind`` ("linear" or "cosine") with ``timesteps`` steps, ``(T,)``."""
    if kind == "linear":
        return linear_alpha_bar(timesteps)
    if kind == "cosine":
        return cosine_alpha_bar(timesteps)
    raise LabkitError(f"schedule={kind!r}: use one of {', '.join(SCHEDULES)}")


def _check_timesteps(timesteps: Any) -> None:
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 2:
        raise LabkitError(f"timesteps={timesteps!r}: expected a whole number >= 2, e.g. 1000")


def _per_sample(value: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or per-sample ``(batch,)`` value shaped to broadcast against ``like``."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.ndim == 0:
        return value
    if value.ndim != 1 or value.shape[0] != like.shape[0]:
        raise LabkitError(f"a per-sample value of shape {tuple(value.shape)} does not fit a batch "
                          f"of shape {tuple(like.shape)}; expected () or ({like.shape[0]},)")
    return value.reshape(-1, *([1] * (like.ndim - 1)))


# ------------------------------------------------------------------------ forward process
def q_sample(x0: Tensor, alpha_bar: Tensor | float, noise: Tensor) -> Tensor:
    """A draw from ``q(x_t | x_0)``: ``sqrt(abar) * x0 + sqrt(1 - abar) * noise``.

    ``x0`` and ``noise``: ``(batch, ...)``; ``alpha_bar``: a float or ``(batch,)``, one per
    example. Returns the shape of ``x0``.
    """
    abar = _per_sample(alpha_bar, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def training_target(x0: Tensor, noise: Tensor, alpha_bar: Tensor | float,
                    prediction: str = "v") -> Tensor:
    """What the network learns to output: ``noise`` ("eps") or ``v = sqrt(abar) noise -
    sqrt(1 - abar) x0`` ("v"). Shapes as in :func:`q_sample`."""
    if prediction == "eps":
        return noise
    if prediction == "v":
        abar = _per_sample(alpha_bar, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    raise LabkitError(f"prediction={prediction!r}: use one of {', '.join(PREDICTIONS)}")


def to_x0_eps(x_t: Tensor, output: Tensor, alpha_bar: Tensor | float,
              prediction: str = "v") -> tuple[Tensor, Tensor]:
    """The clean estimate and the noise ``(x0_hat, eps_hat)`` implied by a network ``output``.

    eps: ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``; v: ``x0 = sqrt(abar) x_t -
    sqrt(1 - abar) v`` and ``eps = sqrt(1 - abar) x_t + sqrt(abar) v``. Shapes as ``x_t``.
    """
    abar = _per_sample(alpha_bar, x_t)
    if prediction == "eps":
        eps = output
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    elif prediction == "v":
        x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * output
        eps = (1 - abar).sqrt() * x_t + abar.sqrt() * output
    else:
        raise LabkitError(f"prediction={prediction!r}: use one of {', '.join(PREDICTIONS)}")
    return x0, eps


class NoiseSchedule:
    """The numbers a diffusion chain needs, precomputed in float64 from ``abar``.

    ``alpha_bar`` ``(T,)``; ``betas`` and ``alphas = 1 - betas``; ``alpha_bar_prev`` (``abar`` one
    step earlier, 1 before the first step); ``posterior_variance`` (the DDPM reverse variance
    ``beta_t (1 - abar_{t-1}) / (1 - abar_t)``). ``snr(t) = abar / (1 - abar)``.
    """

    def __init__(self, kind: str = "cosine", timesteps: int = 1000) -> None:
        self.kind, self.timesteps = kind, timesteps
        self.alpha_bar = alpha_bar_schedule(kind, timesteps)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.alphas = self.alpha_bar / self.alpha_bar_prev
        self.betas = 1 - self.alphas
        self.posterior_variance = self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.kind!r}, timesteps={self.timesteps})"

    def at(self, t: Tensor | int, like: Tensor) -> Tensor:
        """``abar`` at integer steps ``t`` (an int or ``(batch,)``) in ``like``'s dtype/device."""
        index = torch.as_tensor(t, device=torch.device("cpu")).long()
        if index.min() < 0 or index.max() >= self.timesteps:
            raise LabkitError(f"timestep {index.tolist()} outside 0 .. {self.timesteps - 1}")
        return self.alpha_bar[index].to(device=like.device, dtype=like.dtype)

    def snr(self, t: Tensor | int) -> Tensor:
        """The signal-to-noise ratio ``abar / (1 - abar)`` at steps ``t``."""
        abar = self.alpha_bar[torch.as_tensor(t).long()]
        return abar / (1 - abar)


# ------------------------------------------------------------------------------- guidance
def apply_guidance(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``.

    ``scale = 1`` is the conditional prediction, ``0`` the unconditional one, ``> 1`` pushes
    further away from the unconditional one. Same shape in and out.
    """
    return uncond + scale * (cond - uncond)


# ------------------------------------------------------------------------------- samplers
def ddim_step(x_t: Tensor, eps: Tensor, alpha_bar: Tensor | float, alpha_bar_prev: Tensor | float,
              eta: float = 0.0, noise: Tensor | None = None,
              clip_x0: float | None = None) -> Tensor:
    """One DDIM update from ``x_t`` (at ``abar``) to the earlier step (at ``abar_prev``).

    With ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)`` and
    ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))``::

        x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma * noise

    ``eta = 0`` is deterministic; ``eta = 1`` is the DDPM posterior. ``clip_x0`` clamps ``x0``
    (and recomputes ``eps`` from it). Shapes as ``x_t``; ``abar`` floats or ``(batch,)``.
    """
    abar, abar_prev = _per_sample(alpha_bar, x_t), _per_sample(alpha_bar_prev, x_t)
    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp(min=0).sqrt()
    out = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if noise is None:
            noise = torch.randn_like(x_t)
        out = out + sigma * noise
    return out


def ddpm_step(x_t: Tensor, x0: Tensor, schedule: NoiseSchedule, t: int,
              noise: Tensor | None = None) -> Tensor:
    """One ancestral DDPM step: a draw from ``q(x_{t-1} | x_t, x_0 = x0_hat)``.

    Mean ``(sqrt(abar_prev) beta_t x0 + sqrt(alpha_t) (1 - abar_prev) x_t) / (1 - abar_t)``,
    variance ``posterior_variance[t]`` (none at ``t = 0``). Shapes as ``x_t``.
    """
    abar, abar_prev = schedule.alpha_bar[t], schedule.alpha_bar_prev[t]
    beta, alpha = schedule.betas[t], schedule.alphas[t]
    mean = (abar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - abar_prev) * x_t) / (1 - abar)
    if t == 0:
        return mean.to(x_t.dtype)
    if noise is None:
        noise = torch.randn_like(x_t)
    return (mean + schedule.posterior_variance[t].sqrt() * noise).to(x_t.dtype)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps from ``timesteps - 1`` down to 0, evenly spaced (both ends included)."""
    _check_timesteps(timesteps)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise LabkitError(f"steps={steps!r}: expected a whole number in 1 .. {timesteps}")
    if steps == 1:
        return [timesteps - 1]
    return sorted({round(v) for v in np.linspace(timesteps - 1, 0, steps)}, reverse=True)


def _generator_noise(shape: Sequence[int], like: Tensor | None, generator: torch.Generator | None,
                     device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    if like is not None:
        device, dtype = like.device, like.dtype
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def ddim_sample(model_fn: ModelFn, x_T: Tensor, schedule: NoiseSchedule, steps: int = 50,
                prediction: str = "v", eta: float = 0.0, clip_x0: float | None = None,
                generator: torch.Generator | None = None, progress: bool = False,
                callback: Callable[[int, int], Any] | None = None) -> Tensor:
    """Run DDIM from the noise ``x_T`` over ``steps`` evenly spaced timesteps; returns ``x_0``.

    ``model_fn(x_t, t)`` returns the network's prediction (``prediction`` = "eps" or "v") for a
    batch; ``t`` is a ``(batch,)`` long tensor. ``eta`` > 0 adds fresh noise (drawn with
    ``generator``). ``callback(i, steps)`` is called after each step. Shapes as ``x_T``.
    """
    times = ddim_timesteps(schedule.timesteps, steps)
    x = x_T
    for i, t in enumerate(tqdm(times, disable=not progress, desc="DDIM", leave=False)):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        output = model_fn(x, t_batch)
        abar = schedule.at(t, x)
        abar_prev = (schedule.at(times[i + 1], x) if i + 1 < len(times)
                     else torch.ones((), dtype=x.dtype, device=x.device))
        _, eps = to_x0_eps(x, output, abar, prediction)
        noise = _generator_noise(x.shape, x, generator) if eta > 0 else None
        x = ddim_step(x, eps, abar, abar_prev, eta=eta, noise=noise, clip_x0=clip_x0)
        if callback is not None:
            callback(i + 1, len(times))
    return x


def ddpm_sample(model_fn: ModelFn, x_T: Tensor, schedule: NoiseSchedule,
                prediction: str = "v", clip_x0: float | None = None,
                generator: torch.Generator | None = None, progress: bool = False,
                callback: Callable[[int, int], Any] | None = None) -> Tensor:
    """Ancestral DDPM sampling from ``x_T`` through every timestep ``T - 1 .. 0``; returns ``x_0``.

    As slow as the chain is long (one network call per timestep); :func:`ddim_sample` takes a few
    dozen. Arguments as in :func:`ddim_sample`.
    """
    x = x_T
    total = schedule.timesteps
    for i, t in enumerate(tqdm(range(total - 1, -1, -1), total=total, disable=not progress,
                               desc="DDPM", leave=False)):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        output = model_fn(x, t_batch)
        x0, _ = to_x0_eps(x, output, schedule.at(t, x), prediction)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        noise = _generator_noise(x.shape, x, generator) if t > 0 else None
        x = ddpm_step(x, x0, schedule, t, noise=noise)
        if callback is not None:
            callback(i + 1, total)
    return x


def gaussian_mixture_eps(x_t: Tensor, alpha_bar: Tensor | float, means: Tensor, std: float,
                         weights: Tensor | None = None) -> Tensor:
    """The exact noise prediction ``E[eps | x_t]`` for data drawn from a Gaussian mixture.

    Data ``x0 ~ sum_k w_k N(means[k], std^2 I)`` (``means``: ``(components, dim)``); then
    ``x_t ~ sum_k w_k N(sqrt(abar) means[k], (abar std^2 + 1 - abar) I)`` and
    ``E[eps | x_t] = -sqrt(1 - abar) * grad log p(x_t)``. A perfect "denoiser" to try samplers and
    guidance on without training anything. ``x_t``: ``(batch, dim)``; returns ``(batch, dim)``.
    """
    abar = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    abar = abar.reshape(-1, 1, 1) if abar.ndim else abar  # (batch, 1, 1): per example
    means = means.to(x_t)
    weights = (torch.full((means.shape[0],), 1.0 / means.shape[0]) if weights is None
               else weights).to(x_t)
    variance = abar * std**2 + 1 - abar
    diff = x_t[:, None, :] - abar.sqrt() * means[None]  # (batch, components, dim)
    log_resp = torch.log(weights)[None] - 0.5 * (diff**2 / variance).sum(-1)
    resp = torch.softmax(log_resp, dim=1)  # which component x_t came from, (batch, components)
    score = -(resp[..., None] * diff / variance).sum(1)  # grad log p(x_t), (batch, dim)
    return -(1 - abar[..., 0]).sqrt() * score if abar.ndim else -(1 - abar).sqrt() * score


# ------------------------------------------------------------------------------- network
def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding ``(batch, dim)`` of timesteps ``t`` ``(batch,)`` (as in Transformers)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


def _norm(h: Tensor) -> Tensor:
    """Layer norm over the channels of each frame, ``(batch, frames, channels)``.

    Unlike GroupNorm/BatchNorm it never averages over time, so a frame's output depends only on
    its receptive field: chunked inference then matches whole-file inference.
    """
    return F.layer_norm(h, (h.shape[-1],))


class ResidualBlock(nn.Module):
    """Norm, FiLM by the timestep, SiLU, dilated conv, norm, SiLU, pointwise layer, plus the input.

    Works on ``(batch, frames, channels)`` (channels last) and a timestep embedding
    ``(batch, embed_dim)``; returns the same shape. The dilated convolution of width
    ``kernel_size`` is one ``nn.Linear`` applied to ``kernel_size`` time-shifted copies of the
    frames side by side: the same operation as ``nn.Conv1d(dilation=dilation)``, but one large
    matrix product, which trained about twice as fast on our CPU as PyTorch's dilated Conv1d
    backward pass.
    """

    def __init__(self, channels: int, embed_dim: int, kernel_size: int = 3,
                 dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.film = nn.Linear(embed_dim, 2 * channels)
        self.conv = nn.Linear(kernel_size * channels, channels)
        self.mix = nn.Linear(channels, channels)
        nn.init.zeros_(self.mix.weight)  # each block starts as the identity
        nn.init.zeros_(self.mix.bias)

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        scale, shift = self.film(embedding)[:, None].chunk(2, dim=-1)
        x = F.silu(_norm(h) * (1 + scale) + shift)
        x = F.silu(_norm(self.conv(shifted_frames(x, self.kernel_size, self.dilation))))
        return h + self.mix(x)


def shifted_frames(x: Tensor, kernel_size: int, dilation: int) -> Tensor:
    """``(batch, frames, channels)`` -> ``(batch, frames, kernel_size * channels)``: each frame
    next to its neighbours ``dilation`` frames apart (zero-padded at the ends), the input of a
    dilated convolution written as a linear layer."""
    reach = dilation * (kernel_size - 1) // 2
    frames = x.shape[1]
    padded = F.pad(x, (0, 0, reach, reach))
    return torch.cat([padded[:, k * dilation:k * dilation + frames] for k in range(kernel_size)],
                     dim=-1)


class SpectralDenoiser(nn.Module):
    """The denoiser: a dilated convolution net over frames, frequency bins as channels.

    ``forward(x_t, t, cond)``: the noisy high-band features ``(batch, 1, gen_bins, frames)``,
    timesteps ``(batch,)`` and the condition ``(batch, 1, cond_bins, frames)`` -> the prediction
    ``(batch, 1, gen_bins, frames)``. Each frame's bins are projected to ``channels``
    (``input`` and ``condition`` layers, added), pass ``len(dilations) * repeats`` residual blocks
    (dilated convolutions over time, FiLM by the timestep embedding) and a zero-initialised
    ``output`` layer back to the bins, plus ``skip``: a gain per bin and timestep times ``x_t``
    itself (the part of the noise a ``channels``-wide layer cannot see is removed bin by bin,
    like a Wiener filter). ``cond`` may be None (unconditional) and ``drop``
    ``(batch,)`` bool marks examples whose condition is replaced by the learned null condition
    (classifier-free guidance).

    Why bins as channels: every output bin sees every input bin of a frame, which is what
    bandwidth extension needs (the 10 kHz content depends on the harmonics at 1-5 kHz); a 2-D
    conv U-Net would need many levels to reach that far along frequency, and costs more per step
    on a CPU (notebook 05 measures both).
    """

    def __init__(self, gen_bins: int, cond_bins: int, channels: int = 128,
                 dilations: Sequence[int] = (1, 2, 4, 8), repeats: int = 2,
                 kernel_size: int = 3, embed_dim: int = 128) -> None:
        super().__init__()
        for name, value in (("gen_bins", gen_bins), ("cond_bins", cond_bins),
                            ("channels", channels), ("repeats", repeats), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LabkitError(f"SpectralDenoiser: {name}={value!r}; expected a positive int")
        if kernel_size % 2 != 1:
            raise LabkitError(f"SpectralDenoiser: kernel_size={kernel_size} must be odd")
        self.gen_bins, self.cond_bins, self.embed_dim = gen_bins, cond_bins, embed_dim
        self.input = nn.Linear(gen_bins, channels)
        self.condition = nn.Linear(cond_bins, channels)
        self.null_condition = nn.Parameter(torch.zeros(cond_bins))
        self.time = nn.Sequential(nn.Linear(embed_dim, 2 * embed_dim), nn.SiLU(),
                                  nn.Linear(2 * embed_dim, embed_dim))
        self.blocks = nn.ModuleList(
            ResidualBlock(channels, embed_dim, kernel_size, d)
            for _ in range(repeats) for d in dilations)
        self.output = nn.Linear(channels, gen_bins)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        # A per-bin, per-timestep gain on x_t added to the output: without it the network's
        # prediction has rank `channels` per frame, and the noise in the other directions of the
        # bins survives every sampling step (measured: samples twice as rough as real spectra).
        self.skip = nn.Linear(embed_dim, gen_bins)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None,
                drop: Tensor | None = None) -> Tensor:
        if x_t.ndim != 4 or x_t.shape[1] != 1 or x_t.shape[2] != self.gen_bins:
            raise LabkitError(f"SpectralDenoiser: x_t has shape {tuple(x_t.shape)}; expected "
                              f"(batch, 1, {self.gen_bins}, frames)")
        x = x_t[:, 0].transpose(1, 2)  # (batch, frames, bins)
        batch, frames, _ = x.shape
        null = self.null_condition.expand(batch, frames, -1)
        if cond is None:
            c = null
        else:
            if tuple(cond.shape) != (batch, 1, self.cond_bins, frames):
                raise LabkitError(f"SpectralDenoiser: cond has shape {tuple(cond.shape)}; "
                                  f"expected ({batch}, 1, {self.cond_bins}, {frames})")
            c = cond[:, 0].transpose(1, 2)
            if drop is not None:
                c = torch.where(drop[:, None, None], null, c)
        embedding = self.time(timestep_embedding(t, self.embed_dim))
        h = self.input(x) + self.condition(c)
        for block in self.blocks:
            h = block(h, embedding)
        out = self.output(F.silu(_norm(h))) + self.skip(embedding)[:, None] * x
        return out.transpose(1, 2)[:, None]


# ------------------------------------------------------------------------------- the model
@register_model("superres_diffusion")
class SuperResDiffusion(nn.Module):
    """Audio super-resolution by conditional diffusion on log-magnitude STFT features.

    The model restores the band above the input's cutoff of band-limited audio at
    ``sample_rate`` (4x bandwidth extension: from ``low_rate = sample_rate / 4`` by default).
    Features are ``(log(|STFT| + floor) - feature_mean) / feature_std`` of a ``n_fft`` /
    ``hop_length`` Hann STFT. The network generates the bins from ``gen_low_hz`` to Nyquist
    (``gen_bins``) conditioned on the band-limited input's bins from 0 to ``cond_high_hz``
    (``cond_bins``); the bins the input already has are later taken from the input itself, so
    ``gen_low_hz`` sits below the lowest cutoff seen in training and ``cond_high_hz`` above the
    highest. Denoiser settings: ``channels``, ``dilations``, ``repeats``, ``kernel_size``,
    ``embed_dim`` (see :class:`SpectralDenoiser`); diffusion: ``timesteps``, ``schedule``,
    ``prediction``.
    """

    def __init__(self, sample_rate: int = 44100, low_rate: int = 11025, n_fft: int = 2048,
                 hop_length: int = 512, gen_low_hz: float = 4000.0,
                 cond_high_hz: float = 7500.0, channels: int = 128,
                 dilations: Sequence[int] = (1, 2, 4, 8), repeats: int = 2,
                 kernel_size: int = 3, embed_dim: int = 128, timesteps: int = 1000,
                 schedule: str = "cosine", prediction: str = "v", floor: float = 1e-4,
                 feature_mean: float = -5.0, feature_std: float = 2.5) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise LabkitError(f"prediction={prediction!r}: use one of {', '.join(PREDICTIONS)}")
        if not 0 < gen_low_hz < cond_high_hz <= sample_rate / 2:
            raise LabkitError(f"need 0 < gen_low_hz ({gen_low_hz}) < cond_high_hz "
                              f"({cond_high_hz}) <= sample_rate / 2 ({sample_rate / 2})")
        self.sample_rate, self.low_rate = int(sample_rate), int(low_rate)
        self.n_fft, self.hop_length = int(n_fft), int(hop_length)
        self.prediction, self.floor = prediction, float(floor)
        self.feature_mean, self.feature_std = float(feature_mean), float(feature_std)
        bins = n_fft // 2 + 1
        self.gen_start = math.floor(gen_low_hz * n_fft / sample_rate)
        self.cond_stop = math.ceil(cond_high_hz * n_fft / sample_rate) + 1
        self.bins = bins
        self.schedule = NoiseSchedule(schedule, timesteps)
        self.denoiser = SpectralDenoiser(bins - self.gen_start, self.cond_stop, channels,
                                         tuple(dilations), repeats, kernel_size, embed_dim)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    # ------------------------------------------------------------------ features
    @property
    def gen_bins(self) -> slice:
        """The STFT bins the network generates (``gen_low_hz`` to Nyquist)."""
        return slice(self.gen_start, self.bins)

    @property
    def cond_bins(self) -> slice:
        """The STFT bins of the input the network is conditioned on (0 to ``cond_high_hz``)."""
        return slice(0, self.cond_stop)

    def stft(self, audio: Tensor) -> Tensor:
        """Complex STFT ``(batch, bins, frames)`` of waveforms ``(batch, samples)``."""
        return torch.stft(audio, self.n_fft, self.hop_length, window=self.window.to(audio.device),
                          center=True, return_complex=True)

    def istft(self, spec: Tensor, length: int) -> Tensor:
        """Waveforms ``(batch, length)`` from a complex STFT ``(batch, bins, frames)``."""
        return torch.istft(spec, self.n_fft, self.hop_length,
                           window=self.window.to(spec.device), center=True, length=length)

    def to_features(self, magnitude: Tensor) -> Tensor:
        """Normalised log-magnitudes of ``magnitude`` (any shape)."""
        return (torch.log(magnitude + self.floor) - self.feature_mean) / self.feature_std

    def from_features(self, features: Tensor) -> Tensor:
        """Magnitudes from normalised log-magnitudes (inverse of :meth:`to_features`, >= 0)."""
        return (torch.exp(features * self.feature_std + self.feature_mean)
                - self.floor).clamp(min=0)

    def features(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """``(generated band, condition band)`` features of waveforms ``(batch, samples)``:
        ``(batch, 1, gen_bins, frames)`` and ``(batch, 1, cond_bins, frames)``."""
        feats = self.to_features(self.stft(audio).abs())[:, None]
        return feats[:, :, self.gen_bins], feats[:, :, self.cond_bins]

    # ------------------------------------------------------------------ network
    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None,
                drop: Tensor | None = None) -> Tensor:
        """The denoiser's prediction (eps or v) ``(batch, 1, gen_bins, frames)``; see
        :class:`SpectralDenoiser`."""
        return self.denoiser(x_t, t, cond, drop)

    def loss(self, x0: Tensor, cond: Tensor, cond_dropout: float = 0.1,
             generator: torch.Generator | None = None,
             weight: Tensor | None = None) -> Tensor:
        """The denoising loss on clean features ``x0`` given ``cond`` (shapes as in
        :meth:`features`): draw ``t`` uniformly and the noise, noise ``x0`` with :func:`q_sample`,
        replace the condition by the null one with probability ``cond_dropout``, and return the
        mean squared error to :func:`training_target`. ``weight`` ``(gen_bins,)`` weights the bins.
        """
        batch = x0.shape[0]
        t = torch.randint(0, self.schedule.timesteps, (batch,), generator=generator,
                          device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        abar = self.schedule.at(t, x0)
        x_t = q_sample(x0, abar, noise)
        drop = torch.rand(batch, generator=generator, device=x0.device) < cond_dropout
        output = self(x_t, t, cond, drop)
        error = (output - training_target(x0, noise, abar, self.prediction)) ** 2
        if weight is not None:
            error = error * weight.to(error)[None, None, :, None] / weight.mean()
        return error.mean()

    def guided(self, cond: Tensor, guidance_scale: float = 1.0) -> ModelFn:
        """``model_fn(x_t, t)`` for the samplers: the conditional prediction, mixed with the
        unconditional one by :func:`apply_guidance` when ``guidance_scale != 1`` (both computed
        in one batch)."""
        def model_fn(x_t: Tensor, t: Tensor) -> Tensor:
            if guidance_scale == 1.0:
                return self(x_t, t, cond)
            drop = torch.cat([torch.zeros(len(x_t), dtype=torch.bool, device=x_t.device),
                              torch.ones(len(x_t), dtype=torch.bool, device=x_t.device)])
            both = self(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, cond]), drop)
            conditional, unconditional = both.chunk(2)
            return apply_guidance(conditional, unconditional, guidance_scale)

        return model_fn

    @torch.no_grad()
    def sample(self, cond: Tensor, steps: int = 50, guidance_scale: float = 1.0,
               eta: float = 0.0, method: str = "ddim", generator: torch.Generator | None = None,
               clip_x0: float | None = 5.0, progress: bool = False,
               callback: Callable[[int, int], Any] | None = None) -> Tensor:
        """Generated high-band features ``(batch, 1, gen_bins, frames)`` for ``cond``
        ``(batch, 1, cond_bins, frames)``: DDIM over ``steps`` (``method="ddim"``, ``eta``) or
        DDPM over every timestep (``method="ddpm"``), with classifier-free guidance."""
        if method not in ("ddim", "ddpm"):
            raise LabkitError(f"method={method!r}: use 'ddim' or 'ddpm'")
        shape = (cond.shape[0], 1, self.bins - self.gen_start, cond.shape[-1])
        x_T = _generator_noise(shape, None, generator, cond.device, cond.dtype)
        model_fn = self.guided(cond, guidance_scale)
        if method == "ddpm":
            return ddpm_sample(model_fn, x_T, self.schedule, self.prediction, clip_x0, generator,
                               progress, callback)
        return ddim_sample(model_fn, x_T, self.schedule, steps, self.prediction, eta, clip_x0,
                           generator, progress, callback)


# ------------------------------------------------------------------------------ inspector
def receptive_field(module: nn.Module, forward: Callable[[nn.Module, Tensor], Tensor],
                    input_shape: Sequence[int]) -> int:
    """How many input frames (last axis) one output frame depends on, measured by a gradient.

    ``forward(module, x)`` maps an input of ``input_shape`` (frames last) to an output with frames
    last. The gradient of the middle output frame with respect to the input is nonzero exactly on
    the receptive field. Measured on a copy whose zero weights are re-drawn (a zero-initialised
    layer would hide the dependence).
    """
    probe = _probe_copy(module)
    x = torch.randn(tuple(input_shape), requires_grad=True)
    out = forward(probe, x)
    out[..., out.shape[-1] // 2].sum().backward()
    frames = (x.grad.abs().reshape(-1, x.shape[-1]).sum(0) > 0).nonzero()
    return int(frames.max() - frames.min() + 1) if len(frames) else 0


def _probe_copy(module: nn.Module) -> nn.Module:
    probe = copy.deepcopy(module).float().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in probe.parameters():
            if not parameter.abs().sum():
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
    return probe


@dataclass
class ModelReport:
    """What :func:`inspect_model` found: ``rows`` (one dict per block: ``block``, ``kind``,
    ``parameters``, ``receptive_field`` in frames after that block), ``total_parameters``,
    ``receptive_field`` (frames of the whole network) and ``frame_seconds`` (seconds per frame,
    when known). ``str(report)`` is a table."""

    rows: list[dict[str, Any]]
    total_parameters: int
    receptive_field: int
    frame_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        seconds = self.frame_seconds
        lines = [f"{'block':<16}{'kind':<18}{'parameters':>12}{'receptive field':>18}"]
        for row in self.rows:
            rf = row["receptive_field"]
            rf_text = "" if rf is None else f"{rf} fr" + (
                f" ({rf * seconds:.2f} s)" if seconds else "")
            lines.append(f"{row['block']:<16}{row['kind']:<18}{row['parameters']:>12,}"
                         f"{rf_text:>18}")
        total_rf = f"{self.receptive_field} fr" + (
            f" ({self.receptive_field * seconds:.2f} s)" if seconds else "")
        lines.append(f"{'total':<34}{self.total_parameters:>12,}{total_rf:>18}")
        lines += self.notes
        return "\n".join(lines)


def inspect_model(model: nn.Module, frames: int = 257) -> ModelReport:
    """Parameters per block and receptive field of a :class:`SuperResDiffusion` (or its
    :class:`SpectralDenoiser`).

    Blocks are the denoiser's input and condition projections, its timestep MLP, each residual
    block and the output layer. The receptive field after each block is measured with
    :func:`receptive_field` on ``frames`` frames (odd, larger than the field).
    """
    denoiser = model.denoiser if isinstance(model, SuperResDiffusion) else model
    if not isinstance(denoiser, SpectralDenoiser):
        raise LabkitError(f"inspect_model: expected a SuperResDiffusion or SpectralDenoiser, got "
                          f"{type(model).__name__}")
    frame_seconds = (model.hop_length / model.sample_rate
                     if isinstance(model, SuperResDiffusion) else None)
    shape = (1, 1, denoiser.gen_bins, frames)

    def upto(index: int | None) -> Callable[[nn.Module, Tensor], Tensor]:
        def run(probe: nn.Module, x: Tensor) -> Tensor:
            t = torch.full((1,), 10, dtype=torch.long)
            if index is None:
                return probe(x, t, torch.zeros(1, 1, probe.cond_bins, x.shape[-1]))
            embedding = probe.time(timestep_embedding(t, probe.embed_dim))
            h = probe.input(x[:, 0].transpose(1, 2))
            for block in probe.blocks[:index + 1]:
                h = block(h, embedding)
            return h.transpose(1, 2)
        return run

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    rows = [
        {"block": "input", "kind": "Linear (per frame)", "parameters": count(denoiser.input),
         "receptive_field": 1},
        {"block": "condition", "kind": "Linear (per frame)",
         "parameters": count(denoiser.condition) + denoiser.null_condition.numel(),
         "receptive_field": 1},
        {"block": "time", "kind": "MLP", "parameters": count(denoiser.time),
         "receptive_field": None},
    ]
    for i, block in enumerate(denoiser.blocks):
        rows.append({"block": f"block{i}", "kind": f"Residual d={block.dilation}",
                     "parameters": count(block),
                     "receptive_field": receptive_field(denoiser, upto(i), shape)})
    total_rf = receptive_field(denoiser, upto(None), shape)
    rows.append({"block": "output", "kind": "Linear + skip",
                 "parameters": count(denoiser.output) + count(denoiser.skip),
                 "receptive_field": total_rf})
    total = count(model)
    notes = [f"bins: {denoiser.gen_bins} generated, {denoiser.cond_bins} conditioning"]
    if total_rf >= frames:
        notes.append(f"the receptive field fills the {frames} probe frames: pass more frames")
    return ModelReport(rows, total, total_rf, frame_seconds, notes)
