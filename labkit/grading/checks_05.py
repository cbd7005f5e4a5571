"""Checks for the exercises of notebook 05 (diffusion audio super-resolution).

Each check calls the student's function on known answers and random inputs and compares with
:mod:`labkit.models.diffusion` (tested in ``tests/test_diffusion.py``) or
:func:`labkit.metrics.lsd`. Messages say what was wrong and what was expected; a stub that raises or
returns zeros fails with a specific message.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from labkit.grading.registry import exercise, expect
from labkit.models import diffusion


# --------------------------------------------------------------------------- helpers
def _tensor(value: object, what: str) -> torch.Tensor:
    """The student's result as a float64 tensor (NumPy arrays and numbers are accepted too)."""
    expect(value is not None, f"{what} returned None; did you forget the return statement?")
    if isinstance(value, (np.ndarray, float, int, np.floating)):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    expect(isinstance(value, torch.Tensor),
           f"{what} returned a {type(value).__name__}, expected a torch tensor")
    expect(not torch.is_complex(value), f"{what} is complex, expected real values")
    return value.detach().to(torch.float64)


def _shape(out: torch.Tensor, expected: tuple[int, ...], what: str, hint: str = "") -> None:
    expect(tuple(out.shape) == tuple(expected),
           f"{what} has shape {tuple(out.shape)}, expected {tuple(expected)}{hint}")


def _close(out: torch.Tensor, ref: torch.Tensor, what: str, rtol: float = 1e-6,
           atol: float = 1e-8, hint: str = "") -> None:
    if torch.allclose(out, ref.to(out), rtol=rtol, atol=atol):
        return
    if ref.numel() and not torch.any(out) and torch.any(ref):
        expect(False, f"{what} is all zeros, expected nonzero values{hint}")
    error = float((out - ref.to(out)).abs().max())
    expect(False, f"{what} differs from the expected values by up to {error:.3g} (largest "
                  f"expected value {float(ref.abs().max()):.3g}){hint}")


def _fmt(values: torch.Tensor) -> str:
    return np.array2string(values.detach().cpu().numpy(), precision=4, separator=", ",
                           threshold=8)


# --------------------------------------------------------------------------- 05.1 schedule
def _cosine_reference(timesteps: int, s: float) -> torch.Tensor:
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos((steps / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return f[1:] / f[0]


@exercise("05.1", function="cosine_alpha_bar", timeout=60)
def check_cosine_alpha_bar(cosine_alpha_bar):
    """The cosine schedule against its formula, for several lengths and offsets."""
    what = "cosine_alpha_bar(4)"
    out = _tensor(cosine_alpha_bar(4), what)
    _shape(out, (4,), what, " (one value per step t = 1 .. T)")
    ref = _cosine_reference(4, 0.008)
    if not torch.allclose(out, ref, rtol=1e-6):
        hint = ""
        f0 = torch.cos(torch.tensor(0.008 / 1.008 * math.pi / 2, dtype=torch.float64)) ** 2
        if torch.allclose(out, ref * f0, rtol=1e-6):
            hint = " -- divide by f(0), so that abar starts at 1 before the first step"
        elif torch.allclose(out, torch.cat([torch.ones(1, dtype=torch.float64), ref[:-1]]),
                            rtol=1e-6):
            hint = " -- it starts one step early: return f(t) / f(0) for t = 1 .. T, not 0 .. T-1"
        elif torch.allclose(out, ref.sqrt(), rtol=1e-6):
            hint = " -- f(t) is the cosine *squared*"
        expect(False, f"{what} is {_fmt(out)}, expected {_fmt(ref)}{hint}")
    for timesteps, s in ((1000, 0.008), (50, 0.0), (7, 0.1)):
        what = f"cosine_alpha_bar({timesteps}, s={s})"
        out = _tensor(cosine_alpha_bar(timesteps, s=s), what)
        _shape(out, (timesteps,), what)
        ref = _cosine_reference(timesteps, s)
        # labkit clips beta at 0.999 at the very end; either answer is fine there
        _close(out[:-2], ref[:-2], what, rtol=1e-6)
        expect(bool(torch.all(out[1:] <= out[:-1])), f"{what} is not decreasing")
    ours = diffusion.cosine_alpha_bar(1000)
    student = _tensor(cosine_alpha_bar(1000), "cosine_alpha_bar(1000)")
    _close(student[:-2], ours[:-2], "cosine_alpha_bar(1000) compared with labkit's")


# --------------------------------------------------------------------------- 05.2 q_sample
@exercise("05.2", function="q_sample", timeout=60)
def check_q_sample(q_sample):
    """Known values, per-example alpha_bar broadcasting, and the statistics of q(x_t | x_0)."""
    x0 = torch.tensor([[2.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    noise = torch.tensor([[1.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    what = "q_sample(x0, alpha_bar=0.64, noise)"
    out = _tensor(q_sample(x0, torch.tensor(0.64, dtype=torch.float64), noise), what)
    _shape(out, (2, 2), what)
    ref = 0.8 * x0 + 0.6 * noise
    if not torch.allclose(out, ref):
        hint = ""
        if torch.allclose(out, 0.64 * x0 + 0.36 * noise):
            hint = " -- use the square roots: sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise"
        elif torch.allclose(out, 0.6 * x0 + 0.8 * noise):
            hint = " -- x0 and noise are swapped"
        expect(False, f"{what} is {_fmt(out)}, expected {_fmt(ref)}{hint}")

    what = "q_sample(x0 of shape (2, 1, 3, 4), alpha_bar=tensor([0.9, 0.1]), noise)"
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.9, 0.1], dtype=torch.float64)
    try:
        out = _tensor(q_sample(x0, abar, noise), what)
    except RuntimeError as err:
        expect(False, f"{what} raised RuntimeError ({err}); alpha_bar holds one value per "
                      "example: reshape it to (batch, 1, 1, 1) before multiplying")
    _shape(out, (2, 1, 3, 4), what)
    _close(out, diffusion.q_sample(x0, abar, noise), what,
           hint=": each example uses its own alpha_bar (reshape it to broadcast over the rest)")

    draws = _tensor(q_sample(torch.full((100_000,), 3.0, dtype=torch.float64),
                             torch.tensor(0.25, dtype=torch.float64),
                             torch.randn(100_000, generator=g, dtype=torch.float64)),
                    "q_sample on 100000 draws")
    expect(abs(float(draws.mean()) - 1.5) < 0.02 and abs(float(draws.var()) - 0.75) < 0.02,
           f"q_sample(x0=3, alpha_bar=0.25) draws have mean {float(draws.mean()):.3f} and "
           f"variance {float(draws.var()):.3f}; expected sqrt(0.25) * 3 = 1.5 and 1 - 0.25 = 0.75")


# --------------------------------------------------------------------------- 05.3 DDIM step
@exercise("05.3", function="ddim_step", timeout=60)
def check_ddim_step(ddim_step):
    """One deterministic DDIM step: against labkit, and exact on the true noise."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64)
    x_t = diffusion.q_sample(x0, 0.3, noise)
    what = "ddim_step(x_t, true_noise, alpha_bar=0.3, alpha_bar_prev=0.8)"
    out = _tensor(ddim_step(x_t, noise, torch.tensor(0.3, dtype=torch.float64),
                            torch.tensor(0.8, dtype=torch.float64)), what)
    _shape(out, (3, 1, 4, 5), what)
    ref = diffusion.q_sample(x0, 0.8, noise)
    hint = (": with the exact noise, the step must land on sqrt(0.8) x0 + sqrt(0.2) noise -- first "
            "x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar), then x_prev = sqrt(abar_prev) "
            "x0_hat + sqrt(1 - abar_prev) eps")
    if torch.allclose(out, x_t):
        hint = " -- it returns x_t unchanged" + hint
    _close(out, ref, what, hint=hint)

    what = "ddim_step(x_t, eps, alpha_bar=0.05, alpha_bar_prev=1.0) (the last step)"
    x_t = diffusion.q_sample(x0, 0.05, noise)
    out = _tensor(ddim_step(x_t, noise, torch.tensor(0.05, dtype=torch.float64),
                            torch.tensor(1.0, dtype=torch.float64)), what)
    _close(out, x0, what, hint=": the last step returns x0_hat itself")

    eps = torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64)
    what = "ddim_step with per-example alpha_bar tensors of shape (3,)"
    abar, abar_prev = (torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64),
                       torch.tensor([0.4, 0.7, 0.95], dtype=torch.float64))
    out = _tensor(ddim_step(x_t, eps, abar, abar_prev), what)
    _close(out, diffusion.ddim_step(x_t, eps, abar, abar_prev), what,
           hint=": reshape alpha_bar to (batch, 1, 1, 1) to broadcast")


# --------------------------------------------------------------------------- 05.4 guidance
@exercise("05.4", function="guided_prediction", timeout=60)
def check_guided_prediction(guided_prediction):
    """Classifier-free guidance: known values at several scales."""
    cond = torch.tensor([1.0, 3.0, -2.0], dtype=torch.float64)
    uncond = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    for scale, expected in ((0.0, uncond), (1.0, cond), (2.0, torch.tensor([2.0, 5.0, -2.0])),
                            (0.5, torch.tensor([0.5, 2.0, -2.0]))):
        what = f"guided_prediction(cond, uncond, guidance_scale={scale})"
        out = _tensor(guided_prediction(cond, uncond, scale), what)
        _shape(out, (3,), what)
        hint = ""
        if scale == 0.0 and torch.allclose(out, cond.to(out)):
            hint = (" -- at scale 0 the result is uncond, you return cond: are cond and uncond "
                    "swapped?")
        elif scale == 2.0 and torch.allclose(out, cond + 2.0 * (uncond - cond)):
            hint = " -- cond and uncond are swapped: start from uncond, move towards cond"
        elif scale == 2.0 and torch.allclose(out, 2.0 * cond):
            hint = " -- scaling cond alone is not guidance: use uncond + scale * (cond - uncond)"
        _close(out, expected.to(torch.float64), what, hint=hint)
    g = torch.Generator().manual_seed(4)
    cond, uncond = torch.randn(2, 1, 6, 7, generator=g), torch.randn(2, 1, 6, 7, generator=g)
    what = "guided_prediction on (2, 1, 6, 7) tensors, scale 3.5"
    out = _tensor(guided_prediction(cond, uncond, 3.5), what)
    _close(out, diffusion.apply_guidance(cond, uncond, 3.5).to(torch.float64), what, rtol=1e-5)


# --------------------------------------------------------------------------- 05.5 LSD
@exercise("05.5", function="log_spectral_distance", timeout=120)
def check_log_spectral_distance(log_spectral_distance):
    """The LSD in bels against labkit.metrics.lsd, a gain's known answer, and eps."""
    from labkit.metrics import lsd

    rng = np.random.default_rng(5)
    reference = rng.standard_normal(8000).astype(np.float32)
    what = "log_spectral_distance(x, x)"
    value = log_spectral_distance(reference, reference)
    expect(value is not None, f"{what} returned None; did you forget the return statement?")
    expect(abs(float(value)) < 1e-9, f"{what} is {float(value):.4g}, expected 0 (same spectra)")

    what = "log_spectral_distance(x, 10 * x)"
    value = float(log_spectral_distance(reference, 10 * reference))
    hint = ""
    if math.isclose(value, 20.0, rel_tol=1e-3):
        hint = " -- that is in dB: the LSD uses log10 of the power without the factor 10 (bels)"
    elif math.isclose(value, 1.0, rel_tol=1e-3):
        hint = " -- use the power |X|^2, not the magnitude |X|"
    elif math.isclose(value, 4.0, rel_tol=1e-3):
        hint = " -- take the square root of the mean over bins before averaging over frames"
    expect(math.isclose(value, 2.0, rel_tol=1e-3),
           f"{what} is {value:.4g}, expected 2 bels: a gain of 10 is 20 dB of power = 2 bels{hint}")

    estimate = reference + 0.3 * rng.standard_normal(8000).astype(np.float32)
    for kwargs in ({}, {"n_fft": 512, "hop_length": 128}, {"eps": 1e-4}):
        what = f"log_spectral_distance(x, noisy x{''.join(f', {k}={v}' for k, v in kwargs.items())})"
        value = float(log_spectral_distance(reference, estimate, **kwargs))
        ref = float(lsd(reference, estimate, **kwargs))
        expect(math.isclose(value, ref, rel_tol=1e-4),
               f"{what} is {value:.5g}, expected {ref:.5g} (labkit.metrics.lsd: Hann window, "
               "centred frames, mean over frames of sqrt(mean over bins of squared log10 "
               "differences))")
    # eps matters where the estimate is empty: a band-limited estimate
    band_limited = np.fft.irfft(np.fft.rfft(reference) * (np.arange(4001) < 1000), n=8000)
    for eps in (1e-10, 1e-3):
        value = float(log_spectral_distance(reference, band_limited, eps=eps))
        ref = float(lsd(reference, band_limited, eps=eps))
        expect(math.isclose(value, ref, rel_tol=1e-4),
               f"log_spectral_distance(x, band-limited x, eps={eps}) is {value:.5g}, expected "
               f"{ref:.5g}: add eps to both powers before the log10")
