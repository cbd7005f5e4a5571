"""Checks for the exercises of notebook 04 (Gaussian atoms: an honest audio codec).

References: :func:`labkit.models.atoms.render_atom` and :func:`~labkit.models.atoms.render_atoms`
(tested against each other and against autograd in ``tests/test_atoms.py``), and the codec's
scalar quantizer and size arithmetic in :mod:`labkit.atoms.codec` (``tests/test_codec.py``).
Messages say what was wrong and what was expected; a stub that raises or returns zeros fails
with a specific message.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from labkit.atoms import codec
from labkit.grading.registry import exercise, expect
from labkit.models.atoms import render_atom as reference_atom
from labkit.models.atoms import render_atoms as reference_atoms


# --------------------------------------------------------------------------- helpers
def _tensor(value: object, what: str) -> torch.Tensor:
    """The student's result as a float64 tensor (NumPy arrays are accepted for values)."""
    expect(value is not None, f"{what} returned None; did you forget the return statement?")
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    expect(isinstance(value, torch.Tensor),
           f"{what} returned a {type(value).__name__}, expected a torch tensor")
    return value.detach().double()


def _close(out: torch.Tensor, ref: torch.Tensor, what: str, atol: float, hint: str = "") -> None:
    expect(tuple(out.shape) == tuple(ref.shape),
           f"{what} has shape {tuple(out.shape)}, expected {tuple(ref.shape)}{hint}")
    error = float((out - ref).abs().max()) if ref.numel() else 0.0
    if error <= atol:
        return
    if not bool(out.any()) and bool(ref.any()):
        expect(False, f"{what} is all zeros, expected an atom{hint}")
    expect(False, f"{what} differs from the reference by up to {error:.3g} (largest reference "
                  f"value {float(ref.abs().max()):.3g}){hint}")


def _atoms(n: int, seconds: float, sr: int, seed: int, widths: tuple[float, float] = (0.002, 0.02)
           ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.rand(n, generator=g, dtype=torch.float64)
    return {
        "amplitude": rand() * 0.5 + 0.05,
        "centre": rand() * seconds,
        "width": torch.exp(math.log(widths[0]) + rand() * math.log(widths[1] / widths[0])),
        "frequency": rand() * (sr / 2 - 100) + 50,
        "phase": (rand() * 2 - 1) * math.pi,
    }


def _dense(p: dict[str, torch.Tensor], sr: int, length: int) -> torch.Tensor:
    """Every atom at every sample: the reference, and the slow way."""
    t = torch.arange(length, dtype=torch.float64) / sr
    tau = t[None] - p["centre"][:, None]
    values = (p["amplitude"][:, None] * torch.exp(-0.5 * (tau / p["width"][:, None]) ** 2)
              * torch.cos(2 * math.pi * p["frequency"][:, None] * tau + p["phase"][:, None]))
    return values.sum(0)


# --------------------------------------------------------------------------- 04.1 one atom
@exercise("04.1", function="render_atom", timeout=60)
def check_render_atom(render_atom):
    """One atom against the formula, with gradients flowing to every parameter."""
    # centre x frequency is never a whole number of cycles: a phase measured at t = 0 shows up
    cases = [(0.5, 0.1013, 0.01, 441.3, 0.3, 8000, 2000),
             (1.0, 0.0, 0.002, 3000.0, -2.0, 16000, 800),
             (0.2, 0.2517, 0.05, 103.0, math.pi, 16000, 4000),
             (0.7, 0.0301, 0.004, 0.0, 0.5, 8000, 500)]
    for a, c, w, f, p, sr, length in cases:
        what = f"render_atom({a}, {c}, {w}, {f}, {p:.3g}, sr={sr}, length={length})"
        out = _tensor(render_atom(a, c, w, f, p, sr, length), what)
        ref = reference_atom(*(torch.tensor(v, dtype=torch.float64) for v in (a, c, w, f, p)), sr,
                             length)
        hint = ""
        if out.shape == ref.shape and bool(out.any()):
            t = torch.arange(length, dtype=torch.float64) / sr
            if torch.allclose(out, a * torch.exp(-0.5 * ((t - c) / w) ** 2)
                              * torch.cos(2 * math.pi * f * t + p), atol=1e-4) and c != 0:
                hint = (" -- the phase is measured at the atom's centre: the carrier is "
                        "cos(2 pi f (t - centre) + phase)")
            elif torch.allclose(out, a * torch.exp(-((t - c) / w) ** 2)
                                * torch.cos(2 * math.pi * f * (t - c) + p), atol=1e-4):
                hint = " -- the envelope is exp(-(t - centre)^2 / (2 width^2)): mind the 2"
        _close(out, ref, what, atol=1e-5, hint=hint)

    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for v in (0.5, 0.1013, 0.01, 441.3, 0.3)]
    try:
        result = render_atom(*params, 8000, 2000)
        ok = isinstance(result, torch.Tensor) and result.requires_grad
    except (TypeError, RuntimeError) as err:
        ok = False
        result = err
    expect(ok, "render_atom with tensor parameters (requires_grad=True) must return a tensor "
               "that gradients flow through: use torch operations (torch.exp, torch.cos), not "
               f"NumPy (got {type(result).__name__})")
    (result ** 2).sum().backward()
    ref_params = [p.detach().clone().requires_grad_(True) for p in params]
    (reference_atom(*ref_params, 8000, 2000) ** 2).sum().backward()
    names = ("amplitude", "centre", "width", "frequency", "phase")
    for name, mine, ref in zip(names, params, ref_params):
        expect(mine.grad is not None, f"no gradient reached the {name}: build the atom from the "
                                      "parameters with torch operations")
        expect(torch.allclose(mine.grad, ref.grad, rtol=1e-4, atol=1e-6),
               f"the gradient of sum(atom^2) with respect to {name} is {float(mine.grad):.4g}, "
               f"expected {float(ref.grad):.4g}")


# --------------------------------------------------------------------------- 04.2 many atoms
@exercise("04.2", function="render_atoms", timeout=120)
def check_render_atoms(render_atoms):
    """Windowed rendering: equals the dense sum, gradients agree, and it is much faster."""
    sr, length = 8000, 8000
    p = _atoms(60, length / sr, sr, seed=1)
    p["centre"][:2] = torch.tensor([0.0, length / sr], dtype=torch.float64)  # at both edges
    args = [p[k] for k in ("amplitude", "centre", "width", "frequency", "phase")]
    what = "render_atoms(60 atoms on 1 s at 8 kHz, support=8.0)"
    out = _tensor(render_atoms(*args, sr, length, support=8.0), what)
    _close(out, _dense(p, sr, length), what, atol=1e-6,
           hint=" (atoms at the very start and end of the clip must be cut, not wrapped "
                "around or dropped)")
    what = "render_atoms(60 atoms, support=3.0)"
    out = _tensor(render_atoms(*args, sr, length, support=3.0), what)
    # cutting each atom at 3 widths leaves at most exp(-4.5) of every amplitude out
    bound = math.exp(-4.5) * float(p["amplitude"].sum()) + 1e-9
    _close(out, reference_atoms(*args, sr, length, support=3.0), what, atol=bound,
           hint=" (each atom covers centre +- support * width)")
    expect(float((out - _dense(p, sr, length)).abs().max()) > 0,
           "render_atoms(..., support=3.0) equals the dense sum exactly: it should only touch "
           "the samples within 3 widths of each centre")

    small = _atoms(5, 0.2, sr, seed=2)
    leaves = {k: v.clone().requires_grad_(True) for k, v in small.items()}
    order = ("amplitude", "centre", "width", "frequency", "phase")
    target = torch.randn(1600, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = render_atoms(*(leaves[k] for k in order), sr, 1600, support=8.0)
    expect(isinstance(result, torch.Tensor) and result.requires_grad,
           "render_atoms must keep the autograd graph: build it from the parameter tensors with "
           "torch operations (index_add_ or scatter_add_ into a zero tensor works)")
    ((result - target) ** 2).sum().backward()
    reference = {k: v.clone().requires_grad_(True) for k, v in small.items()}
    ((_dense(reference, sr, 1600) - target) ** 2).sum().backward()
    for name in order:
        expect(leaves[name].grad is not None, f"no gradient reached {name}")
        expect(torch.allclose(leaves[name].grad, reference[name].grad, rtol=1e-4, atol=1e-6),
               f"the gradient with respect to {name} differs from the dense sum's by up to "
               f"{float((leaves[name].grad - reference[name].grad).abs().max()):.3g}")

    # efficiency: narrow atoms on a long clip, against evaluating every atom everywhere
    sr, seconds = 16000, 20.0
    length = int(sr * seconds)
    many = _atoms(64, seconds, sr, seed=3, widths=(0.002, 0.005))
    args = [many[k].float() for k in order]
    start = time.perf_counter()
    _dense({k: v.float() for k, v in many.items()}, sr, length)
    dense_seconds = time.perf_counter() - start
    start = time.perf_counter()
    render_atoms(*args, sr, length, support=3.0)
    yours = time.perf_counter() - start
    expect(yours * 5 < dense_seconds,
           f"render_atoms took {yours:.3f} s for 64 narrow atoms on 20 s of audio, the dense sum "
           f"{dense_seconds:.3f} s: expected at least 5x faster. Evaluate each atom only on the "
           "2 * ceil(support * max(width) * sr) + 1 samples around its centre")


# --------------------------------------------------------------------------- 04.3 quantizer
@exercise("04.3", function=("quantize", "dequantize"), timeout=60)
def check_quantizer(quantize, dequantize):
    """Uniform quantization with 2**bits levels over [low, high], clipping, and its inverse."""
    values = np.linspace(-1.0, 3.0, 101)
    for bits in (1, 4, 8, 12, 16):
        what = f"quantize(101 values in [-1, 3], low=-1, high=3, bits={bits})"
        q = quantize(values, -1.0, 3.0, bits)
        expect(q is not None, f"{what} returned None")
        q = np.asarray(q.detach().numpy() if isinstance(q, torch.Tensor) else q)
        expect(np.issubdtype(q.dtype, np.integer),
               f"{what} has dtype {q.dtype}, expected integers (the levels that get stored)")
        ref = codec.quantize_values(values, -1.0, 3.0, bits)
        if not np.array_equal(q, ref):
            hint = ""
            if np.array_equal(q, np.floor((values + 1) / 4 * ((1 << bits) - 1)).astype(int)):
                hint = " -- round to the nearest level (np.rint), do not truncate"
            elif q.max() == 1 << bits:
                hint = f" -- {bits} bits give levels 0 .. {(1 << bits) - 1}: scale by 2**bits - 1"
            bad = int(np.argmax(q != ref))
            expect(False, f"{what}: value {values[bad]:.3f} became level {int(q[bad])}, expected "
                          f"{int(ref[bad])}{hint}")
        back = dequantize(q, -1.0, 3.0, bits)
        back = np.asarray(back.detach().numpy() if isinstance(back, torch.Tensor) else back,
                          dtype=np.float64)
        ref_back = codec.dequantize_values(ref, -1.0, 3.0, bits)
        expect(back.shape == ref_back.shape and np.allclose(back, ref_back, atol=1e-9),
               f"dequantize(levels, -1, 3, {bits}) differs from low + q * (high - low) / "
               f"(2**bits - 1) by up to {float(np.max(np.abs(back - ref_back))):.3g}")
        step = 4.0 / ((1 << bits) - 1)
        expect(np.max(np.abs(back - values)) <= step / 2 + 1e-9,
               f"the round trip at {bits} bits is off by {np.max(np.abs(back - values)):.3g}, "
               f"more than half a step ({step / 2:.3g})")
    clipped = np.asarray(quantize(np.array([-5.0, 9.0]), -1.0, 3.0, 4))
    expect(clipped.tolist() == [0, 15],
           f"quantize([-5, 9], -1, 3, 4) gave {clipped.tolist()}, expected [0, 15]: values "
           "outside [low, high] are clipped to the first and last level")


# --------------------------------------------------------------------------- 04.4 bit rates
@exercise("04.4", function=("bitrate_kbps", "compression_ratio"), timeout=60)
def check_bitrate(bitrate_kbps, compression_ratio):
    """kbit/s from bytes and samples, and the ratio against 16-bit PCM."""
    cases = [(10_000, 80_000, 16_000), (12_345, 44_100 * 3, 44_100), (1, 8000, 8000)]
    for n_bytes, samples, sr in cases:
        what = f"bitrate_kbps({n_bytes}, {samples}, {sr})"
        out = bitrate_kbps(n_bytes, samples, sr)
        expect(isinstance(out, (int, float, np.floating)), f"{what} returned "
                                                           f"{type(out).__name__}, expected a number")
        ref = codec.bitrate_kbps(n_bytes, samples, sr)
        hint = ""
        if math.isclose(out, ref / 8, rel_tol=1e-6):
            hint = " -- a byte is 8 bits"
        elif math.isclose(out, ref * 1000 / 1024, rel_tol=1e-6):
            hint = " -- kbit/s in codecs means 1000 bits per second, not 1024"
        elif math.isclose(out, ref * 1000, rel_tol=1e-6):
            hint = " -- that is bit/s: divide by 1000 for kbit/s"
        expect(math.isclose(out, ref, rel_tol=1e-6), f"{what} = {out:.6g}, expected {ref:.6g} "
                                                     f"(bits / seconds / 1000){hint}")
    for n_bytes, samples, channels in ((10_000, 80_000, 1), (5_000, 80_000, 2)):
        what = f"compression_ratio({n_bytes}, {samples}, channels={channels})"
        out = compression_ratio(n_bytes, samples, channels=channels)
        ref = codec.compression_ratio(n_bytes, samples, channels)
        hint = " -- 16-bit PCM stores 2 bytes per sample and channel" if math.isclose(
            out, ref / 2, rel_tol=1e-6) or math.isclose(out, ref * 8, rel_tol=1e-6) else ""
        expect(math.isclose(out, ref, rel_tol=1e-6),
               f"{what} = {out:.6g}, expected {ref:.6g}{hint}")
    expect(math.isclose(compression_ratio(10_000, 80_000), 16.0),
           "compression_ratio(10000, 80000) should default to one channel and give 16.0")
