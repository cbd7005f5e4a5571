"""The ceiling and the floor of every separation table: oracle masks and the do-nothing baseline.

- **Oracles** know the true stems. An ideal ratio mask (IRM) or ideal binary mask (IBM), computed
  from the stems' spectrograms and applied to the mixture's STFT, shows how well a mask-based model
  *could* do with that STFT: the ceiling.
- **Do nothing** returns the mixture as the estimate of every source: the floor a model must beat.

:func:`evaluate_tracks` scores any estimator over tracks, and passes the true stems only to
estimators explicitly marked as oracles (:class:`Oracle`), so reference information can never
reach a model's score by accident. :func:`separation_report` turns the scores into the table every
separation notebook shows: methods x stems, the mean, and how far each method gets towards the
oracle.

Shapes: stems and estimates are ``(sources, channels, samples)``, a mixture ``(channels, samples)``,
masks ``(sources, channels, bins, frames)``. Inputs may be NumPy arrays or torch tensors; outputs
are float32 NumPy arrays.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from labkit.errors import AudioError, LabkitError
from labkit.metrics import aggregate, sdr, sdr_fast, si_sdr, snr

__all__ = [
    "MASK_KINDS", "METRICS", "Oracle", "do_nothing", "evaluate_tracks", "oracle",
    "oracle_masks", "oracle_separation", "oracle_separation_at", "report_data",
    "sample_mask_oracle", "separation_report", "targets_for",
]

MASK_KINDS: dict[str, float | None] = {"irm1": 1.0, "irm2": 2.0, "ibm": None}
"""Oracle mask kinds and their magnitude exponent (None: binary)."""

METRICS: dict[str, tuple[Callable[..., Any], str]] = {
    "sdr": (sdr, "SDR (museval v4, median over 1 s frames, median over tracks)"),
    "sdr_fast": (sdr_fast, "SDR (fast-bss-eval, whole signal, median over tracks)"),
    "si_sdr": (si_sdr, "SI-SDR (whole signal, median over tracks)"),
    "snr": (snr, "SNR (whole signal, median over tracks)"),
}
"""Metrics :func:`evaluate_tracks` knows: name -> (function, description for tables)."""


def _as_tensor(x: Any):
    """``x`` as a float32 torch tensor on the CPU."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _check_stems(stems: Any) -> None:
    if len(tuple(stems.shape)) != 3:
        raise AudioError(f"stems have shape {tuple(stems.shape)}: expected (sources, channels, "
                         "samples); for one mono source use x[None, None]")


# --------------------------------------------------------------------------- masks
def _exponent(kind: str, alpha: float | None) -> float | None:
    if kind not in MASK_KINDS:
        raise ValueError(f"kind={kind!r}: use one of {', '.join(MASK_KINDS)}")
    if alpha is None:
        return MASK_KINDS[kind]
    if kind == "ibm":
        raise ValueError("alpha applies to ratio masks; kind='ibm' is binary: drop alpha")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r}: the mask exponent must be > 0")
    return float(alpha)


def _masks_from_spectra(spectra, exponent: float | None):
    """Masks ``(sources, ..., bins, frames)`` from complex stem spectra of the same shape."""
    import torch

    mag = spectra.abs()
    if exponent is None:
        # argmax picks the first source on ties, so silent bins go to source 0: still one-hot.
        winner = mag.argmax(dim=0, keepdim=True)
        return torch.zeros_like(mag).scatter_(0, winner, 1.0)
    power = mag if exponent == 1.0 else mag**exponent
    total = power.sum(dim=0, keepdim=True)
    n_sources = power.shape[0]
    # Bins where every stem is silent: share equally, so that masks sum to one everywhere.
    return torch.where(total > 0, power / torch.where(total > 0, total, 1.0), 1.0 / n_sources)


def oracle_masks(stems: Any, kind: str = "irm2", n_fft: int = 4096, hop_length: int = 1024,
                 alpha: float | None = None) -> np.ndarray:
    """Oracle masks from the true stems' STFTs (Hann window, centred frames).

    ``kind``: ``"irm1"`` = ``|S_j| / sum_k |S_k|``, ``"irm2"`` = ``|S_j|^2 / sum_k |S_k|^2`` (the
    Wiener-like mask), ``"ibm"`` = 1 for the loudest source in each bin, 0 elsewhere. ``alpha``
    overrides the exponent of a ratio mask (``|S_j|^alpha / sum_k |S_k|^alpha``). Ratio masks sum
    to one over sources in every bin (bins where all stems are silent get ``1 / sources``); binary
    masks are one-hot.

    ``stems``: ``(sources, channels, samples)``. Returns float32 ``(sources, channels, bins,
    frames)`` with ``bins = n_fft // 2 + 1``.
    """
    from labkit.spectral import stft

    exponent = _exponent(kind, alpha)
    _check_stems(stems)
    spectra = stft(_as_tensor(stems), n_fft=n_fft, hop_length=hop_length)
    return _masks_from_spectra(spectra, exponent).numpy()


def oracle_separation(stems: Any, kind: str = "irm2", n_fft: int = 4096, hop_length: int = 1024,
                      alpha: float | None = None) -> np.ndarray:
    """Separate the mixture ``stems.sum(0)`` with oracle masks (see :func:`oracle_masks`).

    Each mask multiplies the mixture's STFT; the result is inverted with the mixture's phase. The
    mixture is the exact sum of the stems, so its STFT is the sum of theirs.

    ``stems``: ``(sources, channels, samples)``. Returns float32 estimates of the same shape.
    """
    import torch

    from labkit.spectral import istft, stft

    exponent = _exponent(kind, alpha)
    _check_stems(stems)
    stems = _as_tensor(stems)
    length = stems.shape[-1]
    out = np.empty(tuple(stems.shape), dtype=np.float32)
    # One channel at a time: a full song's complex STFTs of every stem are large.
    for c in range(stems.shape[1]):
        spectra = stft(stems[:, c], n_fft=n_fft, hop_length=hop_length)
        masks = _masks_from_spectra(spectra, exponent)
        mixture = spectra.sum(dim=0, keepdim=True)
        estimate = istft(masks * mixture, n_fft=n_fft, hop_length=hop_length, length=length)
        out[:, c] = estimate.to(torch.float32).numpy()
    return out


def oracle_separation_at(stems: Any, sr: int, rate: int, kind: str = "irm2", n_fft: int = 4096,
                         hop_length: int = 1024) -> np.ndarray:
    """:func:`oracle_separation` computed at another sample rate: the stems (at ``sr``) are
    resampled to ``rate``, separated with an ``n_fft``/``hop_length`` STFT there and brought
    back to ``sr``. The oracle of a model that works at ``rate`` (its STFT, its band).

    ``stems``: ``(sources, channels, samples)``; returns float32 estimates of the same shape.
    """
    from labkit.audio import resample

    _check_stems(stems)
    stems = np.asarray(stems, dtype=np.float32)
    sources, channels, length = stems.shape
    low = resample(stems.reshape(-1, length), sr, rate)
    estimate = oracle_separation(low.reshape(sources, channels, -1), kind, n_fft=n_fft,
                                 hop_length=hop_length)
    back = resample(estimate.reshape(-1, estimate.shape[-1]), rate, sr)
    out = np.zeros_like(stems)
    n = min(length, back.shape[-1])
    out[..., :n] = back.reshape(sources, channels, -1)[..., :n]
    return out


def sample_mask_oracle(stems: Any) -> np.ndarray:
    """The best mask in [0, 1] per *sample* and source, applied to the mixture: the oracle of
    masking the waveform itself (notebook 03: why waveform models learn a filterbank first).

    Where a source has the mixture's sign, its mask is ``source / mixture`` (clipped to 1); where
    it has the other sign, no mask in [0, 1] can produce it and the mask is 0. Samples where the
    mixture is (near) zero get 0. ``stems``: ``(sources, channels, samples)``; returns float32
    estimates of the same shape.
    """
    _check_stems(stems)
    stems = np.asarray(stems, dtype=np.float32)
    mixture = stems.sum(0, keepdims=True)
    ratio = np.divide(stems, mixture, out=np.zeros_like(stems), where=np.abs(mixture) > 1e-8)
    return np.clip(ratio, 0.0, 1.0) * mixture


def do_nothing(mixture: Any, n_sources: int) -> np.ndarray:
    """The floor: the mixture ``(channels, samples)`` as the estimate of each of ``n_sources``.

    Returns a read-only float32 view ``(n_sources, channels, samples)`` (no copy of the audio).
    """
    if hasattr(mixture, "detach"):
        mixture = mixture.detach().cpu().numpy()
    mixture = np.asarray(mixture, dtype=np.float32)
    if mixture.ndim != 2:
        raise AudioError(f"mixture has shape {mixture.shape}: expected (channels, samples)")
    if isinstance(n_sources, bool) or not isinstance(n_sources, int) or n_sources < 1:
        raise ValueError(f"n_sources={n_sources!r}: expected a positive whole number")
    return np.broadcast_to(mixture, (n_sources, *mixture.shape))


def targets_for(stems: Any, targets: Sequence[str] = ("vocals", "accompaniment")) -> np.ndarray:
    """Build the evaluation targets from the four stems ``(4, channels, samples)``.

    ``stems`` are in labkit's order (vocals, drums, bass, other). A target is a stem name,
    ``"accompaniment"`` (drums + bass + other) or ``"mixture"``. Returns float32
    ``(len(targets), channels, samples)``.
    """
    from labkit.data.tracks import STEMS, check_targets, combine_stems

    if hasattr(stems, "detach"):
        stems = stems.detach().cpu().numpy()
    stems = np.asarray(stems, dtype=np.float32)
    if stems.ndim != 3 or stems.shape[0] != len(STEMS):
        raise AudioError(f"stems have shape {stems.shape}: expected ({len(STEMS)}, channels, "
                         f"samples) in the order {', '.join(STEMS)}")
    return combine_stems(dict(zip(STEMS, stems)), check_targets(targets))


# --------------------------------------------------------------------------- evaluation
class Oracle:
    """Marks an estimator as an oracle: :func:`evaluate_tracks` calls it as ``fn(mixture, stems)``.

    Only estimators wrapped like this (or carrying ``uses_reference = True``) ever receive the true
    stems; every result they produce is flagged ``oracle`` and must be labelled so in a report.
    """

    uses_reference = True

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], Any], name: str = "oracle"):
        self.fn = fn
        self.name = name

    def __call__(self, mixture: np.ndarray, stems: np.ndarray) -> Any:
        return self.fn(mixture, stems)

    def __repr__(self) -> str:
        return f"Oracle({self.name!r})"


def oracle(kind: str = "irm2", n_fft: int = 4096, hop_length: int = 1024) -> Oracle:
    """An :class:`Oracle` estimator that separates with :func:`oracle_separation`."""
    _exponent(kind, None)

    def separate_with_masks(mixture: np.ndarray, stems: np.ndarray) -> np.ndarray:
        return oracle_separation(stems, kind=kind, n_fft=n_fft, hop_length=hop_length)

    return Oracle(separate_with_masks, name=f"{kind.upper()} oracle")


def _source_names(n_sources: int, sources: Sequence[str] | None) -> tuple[str, ...]:
    if sources is not None:
        sources = tuple(sources)
        if len(sources) != n_sources:
            raise ValueError(f"sources={sources!r} names {len(sources)} sources but the stems "
                             f"hold {n_sources}")
        return sources
    defaults = {2: ("vocals", "accompaniment"), 4: ("vocals", "drums", "bass", "other")}
    if n_sources not in defaults:
        raise ValueError(f"{n_sources} sources: pass sources=(names...) to name them")
    return defaults[n_sources]


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def evaluate_tracks(tracks: Iterable[tuple[str, Any, Any]], estimator: Callable[..., Any],
                    metric: str = "sdr", sr: int = 44100, sources: Sequence[str] | None = None,
                    progress: bool = True, backend: str = "museval") -> dict[str, Any]:
    """Score ``estimator`` on every track; returns per-track scores and their medians.

    ``tracks`` yields ``(name, mixture, stems)``: the mixture ``(channels, samples)`` and the true
    targets ``(sources, channels, samples)`` at ``sr`` Hz (e.g. from :func:`targets_for`). A model
    is called as ``estimator(mixture)``; only an :class:`Oracle` (anything with ``uses_reference =
    True``) is called as ``estimator(mixture, stems)``. Estimates must have the stems' shape.

    ``metric``: ``"sdr"`` (museval, MUSDB convention; ``backend`` as in
    :func:`labkit.metrics.sdr`: ``"direct"`` gives museval's numbers in milliseconds),
    ``"sdr_fast"``, ``"si_sdr"`` or ``"snr"``.
    ``sources`` names the targets (default: vocals/accompaniment for 2, the four stems for 4).

    Returns a JSON-ready dict: ``metric`` (its description), ``oracle`` (whether the estimator saw
    the stems), ``per_track`` ``{track: {source: score}}`` and ``median`` ``{source: score}``
    (median over tracks, NaN ignored), for :func:`separation_report`.
    """
    from tqdm.auto import tqdm

    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: use one of {', '.join(METRICS)}")
    score, description = METRICS[metric]
    uses_reference = getattr(estimator, "uses_reference", False) is True
    per_track: dict[str, dict[str, float]] = {}
    names: tuple[str, ...] | None = None
    for name, mixture, stems in tqdm(tracks, desc="evaluating", disable=not progress):
        stems = _as_numpy(stems)
        mixture = _as_numpy(mixture)
        _check_stems(stems)
        names = names or _source_names(stems.shape[0], sources)
        estimates = estimator(mixture, stems) if uses_reference else estimator(mixture)
        estimates = _as_numpy(estimates)
        if estimates.shape != stems.shape:
            raise LabkitError(f"track {name!r}: {estimator!r} returned shape {estimates.shape}, "
                              f"expected the stems' shape {stems.shape} (sources, channels, "
                              "samples)")
        values = (score(stems, estimates, sr=sr, backend=backend) if metric == "sdr"
                  else score(stems, estimates))
        per_track[str(name)] = {s: float(v) for s, v in zip(names, np.atleast_1d(values))}
    if not per_track:
        raise LabkitError("evaluate_tracks got no tracks: pass an iterable of (name, mixture, "
                          "stems)")
    return {"metric": description, "oracle": uses_reference, "per_track": per_track,
            "median": aggregate(list(per_track.values()))}


# --------------------------------------------------------------------------- report
def _scores_of(name: str, result: dict[str, Any]) -> tuple[dict[str, float], bool]:
    """(scores by source, oracle flag) from either plain scores or an evaluate_tracks result."""
    if "median" in result and isinstance(result["median"], dict):
        is_oracle = bool(result.get("oracle", False))
        if is_oracle and "oracle" not in name.lower():
            raise LabkitError(f"method {name!r} saw the true stems (oracle=True): its name must "
                              "say 'oracle' so that no reported number hides oracle information")
        return {k: float(v) for k, v in result["median"].items()}, is_oracle
    return {k: float(v) for k, v in result.items()}, "oracle" in name.lower()


def _nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def report_data(results: dict[str, dict[str, Any]], sources: Sequence[str] | None = None,
                metric_name: str = "SDR (museval, median)", reference: str = "IRM2 oracle",
                floor: str = "do-nothing") -> dict[str, Any]:
    """The numbers behind :func:`separation_report`, as a JSON-ready dict.

    ``results``: method name -> ``{source: score}`` or an :func:`evaluate_tracks` result (an oracle
    result whose name lacks "oracle" raises LabkitError). For each method: its ``scores`` per
    source and their ``mean``; ``fraction_of_reference`` = score / reference score (the "x oracle"
    figure); ``gap_closed`` = (score - floor) / (reference - floor), 0 at the floor and 1 at the
    ceiling. Both are None without that row or where undefined.
    """
    table = {name: _scores_of(name, result) for name, result in results.items()}
    if sources is None:
        sources = list(dict.fromkeys(s for scores, _ in table.values() for s in scores))
    sources = list(sources)
    rows: dict[str, dict[str, float]] = {}
    for name, (scores, _) in table.items():
        row = {s: scores.get(s, math.nan) for s in sources}
        row["mean"] = _nanmean(row.values())
        rows[name] = row

    def relative(name: str, fn: Callable[[float, float, float], float]) -> dict[str, float | None]:
        ref, low = rows.get(reference), rows.get(floor, {})
        out: dict[str, float | None] = {}
        for s in [*sources, "mean"]:
            value = fn(rows[name][s], ref[s] if ref else math.nan, low.get(s, math.nan))
            out[s] = None if not math.isfinite(value) else value
        return out

    def ratio(num: float, den: float) -> float:
        return num / den if den != 0 and math.isfinite(num) and math.isfinite(den) else math.nan

    methods = {
        name: {
            "scores": rows[name],
            "oracle": table[name][1],
            "fraction_of_reference": relative(name, lambda v, r, f: ratio(v, r)),
            "gap_closed": relative(name, lambda v, r, f: ratio(v - f, r - f)),
        }
        for name in rows
    }
    return {"metric": metric_name, "sources": sources, "reference": reference, "floor": floor,
            "methods": methods}


def _cell(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f}"


def separation_report(results: dict[str, Any], sources: Sequence[str] | None = None,
                      metric_name: str = "SDR (museval, median)", reference: str = "IRM2 oracle",
                      floor: str = "do-nothing") -> str:
    """A markdown table of methods x sources (+ mean), with each method's share of the oracle.

    ``results`` is what :func:`report_data` takes, or what it returns (so a table can be rebuilt
    from a benchmark's JSON). Columns: one per source, ``mean`` (over sources), ``× oracle``
    (mean / the ``reference`` row's mean) and ``gap closed`` (from the ``floor`` row, 0 %, to the
    reference, 100 %). The title names the metric: always say which SDR convention it is.
    """
    data = results if "methods" in results and "metric" in results else report_data(
        results, sources, metric_name, reference, floor)
    sources = data["sources"]
    header = ["method", *sources, "mean", "× oracle", "gap closed"]
    lines = [f"**{data['metric']}** (dB; reference: {data['reference']}, floor: {data['floor']})",
             "", "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, method in data["methods"].items():
        gap = method["gap_closed"]["mean"]
        cells = [name, *(_cell(method["scores"][s]) for s in sources),
                 _cell(method["scores"]["mean"]), _cell(method["fraction_of_reference"]["mean"]),
                 "–" if gap is None else f"{100 * gap:.0f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
