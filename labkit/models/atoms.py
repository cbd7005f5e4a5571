"""Gabor atoms: a sound as a sum of Gaussian-windowed sinusoids, rendered differentiably.

One atom ``k`` is the audio cousin of a Gaussian "splat"::

    y_k(t) = a_k * exp(-(t - c_k)^2 / (2 w_k^2)) * cos(2 pi f_k (t - c_k) + pi r_k (t - c_k)^2 + phi_k)

with amplitude ``a`` (linear, >= 0), centre time ``c`` (s), width ``w`` (s, the standard deviation
of the Gaussian envelope), frequency ``f`` (Hz), phase ``phi`` (rad) and an optional chirp rate
``r`` (Hz/s: the frequency moves by ``r`` Hz per second across the atom). Time ``t`` is
``sample / sr``. The phase is measured at the atom's centre, not at ``t = 0``: moving an atom
then moves its carrier with it, so parameters stay local (which is what makes them fit and
quantize well).

Rendering (:func:`render_atoms`) is vectorised and local: an atom touches only the samples
within ``support`` widths of its centre (a Gaussian is below 1.1 % of its peak beyond 3 widths).
Atoms are sorted by width and rendered in chunks of about 128k samples, every atom of a chunk on
``2 * ceil(support * w_max * sr) + 1`` samples with ``w_max`` the chunk's widest, so that a few
wide atoms do not make every atom pay for their support and temporaries stay in the CPU cache.
The backward pass is written out by hand (six weighted sums per atom) instead of storing every
intermediate for autograd: 1000 atoms on 5 s of 16 kHz audio render forward and backward in tens
of milliseconds (``benchmarks/atoms.py``).
:func:`render_atom` is the plain, dense formula for one atom: the reference the fast path is
tested against.

:class:`GaborAtoms` holds the parameters of N atoms as an ``nn.Module`` whose ``forward()``
returns the rendered audio ``(1, samples)``; it is registered as ``"gabor_atoms"`` so labkit
checkpoints can rebuild it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from labkit.errors import LabkitError
from labkit.models import register_model

__all__ = [
    "PARAMETER_NAMES", "GaborAtoms", "atom_energy", "render_atom", "render_atoms", "support_length",
]

#: The parameters of an atom, in the order they are reported and stored.
PARAMETER_NAMES: tuple[str, ...] = ("amplitude", "centre", "width", "frequency", "phase", "chirp")

_CHUNK_ELEMENTS = 1 << 17  # atoms x support samples per chunk: ~0.5 MB of float32, cache-sized
_TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------- reference
def render_atom(amplitude: float | Tensor, centre: float | Tensor, width: float | Tensor,
                frequency: float | Tensor, phase: float | Tensor, sr: int, length: int,
                chirp: float | Tensor = 0.0) -> Tensor:
    """One atom evaluated at every sample: ``(length,)`` float32 (float64 if inputs are).

    The dense formula of the module docstring, with plain torch operations (so autograd
    differentiates it). Costs ``length`` evaluations per atom: use :func:`render_atoms` for many.
    """
    values = [torch.as_tensor(v) for v in (amplitude, centre, width, frequency, phase, chirp)]
    dtype = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
    a, c, w, f, p, r = (v.to(dtype) for v in values)
    tau = torch.arange(length, dtype=dtype) / sr - c
    envelope = torch.exp(-0.5 * (tau / w) ** 2)
    return a * envelope * torch.cos(_TWO_PI * f * tau + math.pi * r * tau**2 + p)


# --------------------------------------------------------------------------- fast renderer
def support_length(width: float, sr: int, support: float = 3.0) -> int:
    """Samples an atom of ``width`` seconds touches: ``2 * ceil(support * width * sr) + 1``."""
    if not width > 0:
        raise LabkitError(f"width={width!r}: an atom needs a positive width in seconds")
    return 2 * math.ceil(support * width * sr) + 1


def _plan(width: Tensor, sr: int, support: float) -> list[tuple[Tensor, int]]:
    """Group atoms of similar width: ``[(atom indices, half support in samples), ...]``.

    Atoms are sorted by width and binned in steps of a quarter octave of support; each bin is
    cut into chunks of about ``_CHUNK_ELEMENTS`` samples in all, with the support of the bin's
    widest atom. So a few wide atoms do not make every atom pay for their support, and each
    chunk's temporaries stay small enough for the CPU cache.
    """
    halves = torch.ceil(support * width.detach().double() * sr).long()
    order = torch.argsort(halves)
    sorted_halves = halves[order]
    bins = torch.ceil(4 * torch.log2(sorted_halves.double() + 1)).long()
    _, counts = torch.unique_consecutive(bins, return_counts=True)
    plan, start = [], 0
    for count in counts.tolist():
        half = int(sorted_halves[start + count - 1])
        step = max(1, _CHUNK_ELEMENTS // (2 * half + 1))
        for first in range(start, start + count, step):
            plan.append((order[first:min(first + step, start + count)], half))
        start += count
    return plan


def _local_times(centre: Tensor, sr: int, half: int) -> tuple[Tensor, Tensor, Tensor]:
    """For atoms ``(n,)``: first sample index ``(n,)``, offset of the first sample from the centre
    in seconds ``(n,)`` and the support's sample offsets in seconds ``(K,)``."""
    # float64 for the centre in samples: at 5 s and 16 kHz float32 keeps only ~1/100 sample,
    # which is a visible phase error at high frequencies.
    position = centre.double() * sr
    first = torch.floor(position).long() - half
    offset = ((first + half - position) / sr).to(centre.dtype)
    steps = (torch.arange(2 * half + 1, device=centre.device) - half).to(centre.dtype) / sr
    return first, offset, steps


class _RenderAtoms(torch.autograd.Function):
    """Windowed sum of atoms with a hand-written backward (no per-sample intermediates saved)."""

    @staticmethod
    def forward(ctx: Any, amplitude: Tensor, centre: Tensor, width: Tensor, frequency: Tensor,
                phase: Tensor, chirp: Tensor, sr: int, length: int, support: float) -> Tensor:
        plan = _plan(width, sr, support)
        margin = max(half for _, half in plan) + 1
        # A margin on both sides takes the samples that fall outside the clip: no masks needed.
        out = amplitude.new_zeros(length + 2 * margin)
        for atoms, half in plan:
            first, offset, steps = _local_times(centre[atoms], sr, half)
            tau = offset[:, None] + steps
            a, w, f, p, r = (v[atoms, None] for v in (amplitude, width, frequency, phase, chirp))
            values = a * torch.exp(tau * tau * (-0.5 / w**2)) * torch.cos(
                tau * (_TWO_PI * f + math.pi * r * tau) + p)
            index = (first + margin)[:, None] + torch.arange(2 * half + 1, device=out.device)
            out.index_add_(0, index.reshape(-1), values.reshape(-1))
        ctx.save_for_backward(amplitude, centre, width, frequency, phase, chirp)
        ctx.sr, ctx.length, ctx.support, ctx.margin = sr, length, support, margin
        return out[margin:margin + length]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        amplitude, centre, width, frequency, phase, chirp = ctx.saved_tensors
        sr, margin = ctx.sr, ctx.margin
        grads = [torch.zeros_like(v) for v in (amplitude, centre, width, frequency, phase, chirp)]
        padded = torch.nn.functional.pad(grad_out, (margin, margin))
        for atoms, half in _plan(width, sr, ctx.support):
            first, offset, steps = _local_times(centre[atoms], sr, half)
            index = (first + margin)[:, None] + torch.arange(2 * half + 1, device=padded.device)
            tau = offset[:, None] + steps
            a, w, f, p, r = (v[atoms, None] for v in (amplitude, width, frequency, phase, chirp))
            envelope = padded[index] * torch.exp(tau * tau * (-0.5 / w**2))
            angle = tau * (_TWO_PI * f + math.pi * r * tau) + p
            n = atoms.shape[0]
            weighted = torch.cat([envelope * torch.cos(angle), envelope * torch.sin(angle)])
            # Every gradient is a weighted sum over the support of g*e*cos or g*e*sin times
            # 1, tau or tau^2. With tau = steps + offset these are one matrix product with
            # [1, steps, steps^2] and a per-atom correction for the offset.
            basis = torch.stack([torch.ones_like(steps), steps, steps * steps], dim=1)
            m0, m1, m2 = (weighted @ basis).unbind(1)
            d = torch.cat([offset, offset])
            s0, s1, s2 = m0, m1 + d * m0, m2 + 2 * d * m1 + d * d * m0
            ec0, es0 = s0[:n], s0[n:]
            ec1, es1 = s1[:n], s1[n:]
            ec2, es2 = s2[:n], s2[n:]
            a, w, f, r = a[:, 0], w[:, 0], f[:, 0], r[:, 0]
            grads[0][atoms] = ec0
            # d tau / d c = -1: the envelope gives +tau / w^2, the carrier +(2 pi f + 2 pi r tau)
            grads[1][atoms] = a * (ec1 / w**2 + _TWO_PI * f * es0 + _TWO_PI * r * es1)
            grads[2][atoms] = a * ec2 / w**3
            grads[3][atoms] = -a * _TWO_PI * es1
            grads[4][atoms] = -a * es0
            grads[5][atoms] = -a * math.pi * es2
        needed = ctx.needs_input_grad
        return (*(gr if needed[i] else None for i, gr in enumerate(grads)), None, None, None)


def render_atoms(amplitude: Tensor, centre: Tensor, width: Tensor, frequency: Tensor,
                 phase: Tensor, sr: int, length: int, chirp: Tensor | None = None,
                 support: float = 3.0) -> Tensor:
    """The sum of N atoms, ``(length,)``, each evaluated only on its own support.

    Every parameter is a tensor of shape ``(N,)`` (see the module docstring for units); ``chirp``
    may be None (all zero). Each atom covers at least ``support`` widths on both sides of its
    centre (:func:`support_length` of the widest atom in its chunk, see the module docstring).
    Differentiable with respect to every parameter (hand-written backward); the result equals
    the sum of :func:`render_atom` over the atoms up to the Gaussian tails cut off.
    """
    params = [amplitude, centre, width, frequency, phase]
    params = [torch.as_tensor(v) for v in params]
    n = params[0].shape[0] if params[0].ndim == 1 else -1
    if any(v.ndim != 1 or v.shape[0] != n for v in params):
        shapes = ", ".join(str(tuple(v.shape)) for v in params)
        raise LabkitError(f"render_atoms: amplitude, centre, width, frequency and phase must all "
                          f"have shape (N,); got {shapes}")
    chirp = torch.zeros_like(params[0]) if chirp is None else torch.as_tensor(chirp)
    if chirp.shape != params[0].shape:
        raise LabkitError(f"render_atoms: chirp has shape {tuple(chirp.shape)}, expected ({n},)")
    if length < 1:
        raise LabkitError(f"render_atoms: length={length!r}; expected a positive sample count")
    dtype = torch.promote_types(params[0].dtype, torch.float32)
    params = [v.to(dtype) for v in params]
    chirp = chirp.to(dtype)
    if n == 0:
        return params[0].new_zeros(length)
    if float(params[2].detach().min()) <= 0:
        raise LabkitError("render_atoms: every width must be positive (seconds)")
    return _RenderAtoms.apply(*params, chirp, int(sr), int(length), float(support))


def atom_energy(amplitude: Tensor, width: Tensor) -> Tensor:
    """The energy of each atom, ``integral of y(t)^2 dt = a^2 w sqrt(pi) / 2``, shapes ``(N,)``.

    Exact for a carrier well above ``1 / w`` Hz (``cos^2`` averages to 1/2); multiply by ``sr``
    for the sum of squared samples. Used to rank atoms (pruning, keeping the strongest).
    """
    return amplitude**2 * width * math.sqrt(math.pi) / 2


# --------------------------------------------------------------------------- the model
@register_model("gabor_atoms")
class GaborAtoms(nn.Module):
    """N Gabor atoms as learnable parameters; ``forward()`` renders them to ``(1, length)``.

    Parameters (``nn.Parameter``, shape ``(n_atoms,)``): ``amplitude``, ``centre`` (s),
    ``log_width`` (natural log of the width in s, so that gradient steps are relative), ``frequency``
    (Hz), ``phase`` (rad) and, with ``chirp=True``, ``chirp_rate`` (Hz/s). Widths are kept in
    ``[min_width, max_width]``, centres inside the clip and frequencies in ``[0, sr / 2]`` by
    :meth:`project_`, which the fitter calls after each optimiser step. New atoms start at zero
    amplitude, 1 kHz, 5 ms, spread evenly over the clip; :meth:`set_params` fills in real values.
    """

    def __init__(self, n_atoms: int = 100, sample_rate: int = 16000, length: int = 16000,
                 chirp: bool = False, min_width: float = 0.0005, max_width: float = 0.05,
                 support: float = 3.0) -> None:
        super().__init__()
        if n_atoms < 0 or length < 1 or sample_rate < 1:
            raise LabkitError(f"GaborAtoms: n_atoms={n_atoms}, sample_rate={sample_rate}, "
                              f"length={length}; expected n_atoms >= 0 and positive rate/length")
        if not 0 < min_width <= max_width:
            raise LabkitError(f"GaborAtoms: min_width={min_width}, max_width={max_width}; "
                              "expected 0 < min_width <= max_width (seconds)")
        self.sample_rate, self.length = int(sample_rate), int(length)
        self.min_width, self.max_width, self.support = float(min_width), float(max_width), support
        self.has_chirp = bool(chirp)
        duration = length / sample_rate
        self.amplitude = nn.Parameter(torch.zeros(n_atoms))
        self.centre = nn.Parameter((torch.arange(n_atoms) + 0.5) * duration / max(n_atoms, 1))
        self.log_width = nn.Parameter(torch.full((n_atoms,), math.log(0.005)))
        self.frequency = nn.Parameter(torch.full((n_atoms,), 1000.0))
        self.phase = nn.Parameter(torch.zeros(n_atoms))
        if self.has_chirp:
            self.chirp_rate = nn.Parameter(torch.zeros(n_atoms))

    @property
    def n_atoms(self) -> int:
        """How many atoms the model holds."""
        return self.amplitude.shape[0]

    @property
    def duration(self) -> float:
        """The clip length in seconds."""
        return self.length / self.sample_rate

    @property
    def width(self) -> Tensor:
        """Widths in seconds, ``(n_atoms,)`` (differentiable: ``exp(log_width)``)."""
        return self.log_width.exp()

    def forward(self) -> Tensor:
        """Render every atom: ``(1, length)``."""
        chirp = self.chirp_rate if self.has_chirp else None
        y = render_atoms(self.amplitude, self.centre, self.width, self.frequency, self.phase,
                         self.sample_rate, self.length, chirp, self.support)
        return y[None]

    def params(self) -> dict[str, Tensor]:
        """Detached copies of the atom parameters in natural units, each ``(n_atoms,)``.

        Keys: :data:`PARAMETER_NAMES` (``chirp`` is zeros without ``chirp=True``).
        """
        with torch.no_grad():
            chirp = self.chirp_rate if self.has_chirp else torch.zeros_like(self.amplitude)
            values = (self.amplitude, self.centre, self.width, self.frequency, self.phase, chirp)
            return {name: v.detach().clone() for name, v in zip(PARAMETER_NAMES, values)}

    @torch.no_grad()
    def set_params(self, **values: Tensor) -> GaborAtoms:
        """Overwrite parameters by name (natural units, shape ``(n_atoms,)``); returns self."""
        for name, value in values.items():
            if name not in PARAMETER_NAMES:
                raise LabkitError(f"GaborAtoms.set_params: unknown parameter {name!r}; use "
                                  f"{', '.join(PARAMETER_NAMES)}")
            value = torch.as_tensor(value, dtype=self.amplitude.dtype)
            if value.shape != (self.n_atoms,):
                raise LabkitError(f"GaborAtoms.set_params: {name} has shape {tuple(value.shape)},"
                                  f" expected ({self.n_atoms},)")
            if name == "width":
                self.log_width.copy_(value.clamp_min(1e-9).log())
            elif name == "chirp":
                if self.has_chirp:
                    self.chirp_rate.copy_(value)
                elif bool((value != 0).any()):
                    raise LabkitError("GaborAtoms.set_params: this model has no chirp "
                                      "(build it with chirp=True)")
            else:
                getattr(self, name).copy_(value)
        return self.project_()

    @classmethod
    def from_params(cls, params: dict[str, Tensor], sample_rate: int, length: int,
                    **options: Any) -> GaborAtoms:
        """A model holding the atoms ``params`` (natural units, see :meth:`params`).

        ``options`` go to the constructor (``min_width``, ``max_width``, ``support``); ``chirp``
        is switched on when ``params`` has a nonzero ``chirp`` entry unless given.
        """
        n = int(torch.as_tensor(params["amplitude"]).shape[0])
        chirp = params.get("chirp")
        options.setdefault("chirp", chirp is not None and bool((torch.as_tensor(chirp) != 0).any()))
        model = cls(n_atoms=n, sample_rate=sample_rate, length=length, **options)
        present = {k: v for k, v in params.items() if k in PARAMETER_NAMES}
        if not model.has_chirp:
            present.pop("chirp", None)
        return model.set_params(**present)

    @torch.no_grad()
    def project_(self) -> GaborAtoms:
        """Keep parameters valid without changing the sound; returns self.

        A negative amplitude becomes positive with the phase turned by pi, phases wrap into
        ``[-pi, pi)``, widths are clamped to ``[min_width, max_width]``, centres to the clip and
        frequencies to ``[0, sr / 2]``.
        """
        negative = self.amplitude < 0
        self.amplitude.abs_()
        self.phase.add_(negative.to(self.phase.dtype) * math.pi)
        self.phase.copy_(torch.remainder(self.phase + math.pi, _TWO_PI) - math.pi)
        self.log_width.clamp_(math.log(self.min_width), math.log(self.max_width))
        self.centre.clamp_(0.0, self.duration)
        self.frequency.clamp_(0.0, self.sample_rate / 2)
        return self

    def extra_repr(self) -> str:
        return (f"n_atoms={self.n_atoms}, sample_rate={self.sample_rate}, length={self.length}, "
                f"chirp={self.has_chirp}")
