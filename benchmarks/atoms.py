"""Benchmark of notebook 04's atom codec: speed, rate-distortion against real codecs, and the
published "audio Gaussian splatting" table re-measured honestly.

    .venv/bin/python benchmarks/atoms.py                 # everything (about an hour on 2 cores)
    .venv/bin/python benchmarks/atoms.py --only timing   # the speed bar alone (~3 min)
    .venv/bin/python benchmarks/atoms.py --only rd --clips speech --targets 16

Results go to ``benchmarks/results/atoms.json`` (merged into what is there, section by section).
Every size is the length of bytes actually written (atom files, MP3 and Opus files from
soundfile, top-K coefficient files); every score is computed on what a decoder reconstructs from
those bytes alone, aligned by cross-correlation where the codec adds a delay (MP3).

Sections:

- ``timing``: 1000 atoms fitted to 5 s of 16 kHz speech for 2000 steps (the issue's bar: at most
  3 minutes on 2 cores), with wall and CPU time and the machine's load average. On a machine
  shared with other jobs, wall time measures the queue, and the CPU time of several threads
  includes their spin-waiting for each other: ``--threads 1`` gives the CPU time of the work
  itself (``timing_threads_1``), an upper bound for the wall time on an idle machine.
- ``rate_distortion``: for each clip (the espeak-ng speech clip in ``data/`` and
  ``labkit.signals.music_like``) and each target rate, MP3 (constant bit rate) at the target,
  Opus at the encoder setting whose measured rate is closest to MP3's, the atom codec fitted and
  trimmed to at most MP3's byte count, and top-K MDCT / STFT coefficient files of at most the
  same byte count.
- ``claims``: the table quoted in the course's reference document ("300 Gaussians, 100x, 20 dB,
  8 kbps" for speech, and three music rows) re-measured: the same atom counts at 8 bits per
  parameter (the reference's setting) and at the codec's default bits, scored as published
  (size from a formula, original phase reused) and honestly (bytes of the file, a decoder
  without the original). There are no piano or symphony recordings here: the three music rows
  use the music-like clip with the claimed atom counts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit import audio as audio_io
from labkit import metrics, signals
from labkit.atoms import baselines, codec
from labkit.atoms import fit as atoms_fit
from labkit.atoms.runs import DEFAULT_BITS
from labkit.models.atoms import atom_energy

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000
OUT = ROOT / "benchmarks" / "results" / "atoms.json"
SPEECH = ROOT / "data" / "speech_harvard_16k.wav"
TARGETS_KBPS = (8, 16, 24, 32, 48)
#: The fit preset used for each clip.
PRESET_OF = {"speech": "speech", "music": "music"}
#: The table quoted in the reference document (001_*.txt): kind, Gaussians, ratio, SNR, kbps.
CLAIMED = [("speech", "speech", 300, 100, 20, 8), ("piano", "music", 500, 60, 25, 16),
           ("pop", "music", 1000, 30, 22, 32), ("symphony", "music", 2000, 15, 20, 64)]


def load_clip(name: str) -> np.ndarray:
    """The 5 s benchmark clips at 16 kHz, ``(1, samples)``."""
    if name == "speech":
        x, _ = audio_io.load(SPEECH, sr=SR, mono=True)
        return x
    if name == "music":
        return signals.music_like(5.0, SR, seed=0)
    raise ValueError(f"unknown clip {name!r}")


def scores(reference: np.ndarray, decoded: np.ndarray, n_bytes: int) -> dict[str, float]:
    """Size and quality numbers of one decoded signal, measured the same way for every codec."""
    return {
        "bytes": int(n_bytes),
        "kbps": codec.bitrate_kbps(n_bytes, reference.shape[-1], SR),
        "ratio": codec.compression_ratio(n_bytes, reference.shape[-1]),
        "snr": float(metrics.snr(reference, decoded)),
        "si_snr": float(metrics.si_sdr(reference, decoded)),
        "lsd": float(metrics.lsd(reference, decoded)),
        "mel_distance": codec.mel_distance(reference, decoded, SR),
    }


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M")}


def save(section: str, value: Any, out: Path = OUT) -> None:
    """Merge one section into the results file (written atomically)."""
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[section] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, out)


# --------------------------------------------------------------------------- timing
def bench_timing(steps: int = 2000, n_atoms: int = 1000) -> dict[str, Any]:
    x = load_clip("speech")
    before = machine()
    wall, cpu = time.perf_counter(), time.process_time()
    result = atoms_fit.fit(x, SR, atoms_fit.preset("default", n_atoms=n_atoms, steps=steps),
                           progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    model = result.model
    # rendering alone, forward and forward + backward, median of 20
    forward, backward = [], []
    for _ in range(20):
        start = time.perf_counter()
        with torch.no_grad():
            model()
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        model().pow(2).sum().backward()
        backward.append(time.perf_counter() - start)
    return {
        "task": f"fit {n_atoms} atoms to 5 s of 16 kHz speech, {steps} Adam steps, L2 loss",
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
        "ms_per_step_wall": round(1000 * wall / steps, 1),
        "render_forward_ms": round(1000 * float(np.median(forward)), 2),
        "render_forward_backward_ms": round(1000 * float(np.median(backward)), 2),
        "final_snr_db": round(result.history["snr"][-1], 2),
        "bar_seconds": 180, "passes": wall <= 180,
        "machine_before": before, "machine_after": machine(),
    }


# --------------------------------------------------------------------------- atoms at a budget
def _recipe(n_atoms: int, steps: int, preset: str = "speech") -> atoms_fit.FitConfig:
    """A preset's recipe scaled to about ``n_atoms`` final atoms: start at 72 %, grow by 10 %
    four times (pruning removes some), as the speech preset does for 2800 atoms."""
    start = max(8, round(0.72 * n_atoms))
    grow = max(1, round(0.1 * n_atoms))
    at = [round(steps * f) for f in (1 / 6, 2 / 6, 3 / 6, 4 / 6)]
    return atoms_fit.preset(preset, n_atoms=start, steps=steps, grow_at=at, grow_by=grow,
                            prune_below=0.05)


def _trim(params: dict[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    energy = atom_energy(params["amplitude"], params["width"])
    order = torch.argsort(energy, descending=True)[:keep]
    return {k: v[order] for k, v in params.items()}


#: Bit allocations the benchmark's encoder chooses from (by measured SNR at the byte budget): the
#: default, and more bits for frequency, which wide atoms need (a frequency error turns into a
#: phase drift that grows with the atom's width).
BIT_CANDIDATES = [DEFAULT_BITS, {**DEFAULT_BITS, "frequency": 13},
                  {**DEFAULT_BITS, "frequency": 14}, {**DEFAULT_BITS, "frequency": 14,
                                                      "amplitude": 7, "phase": 7}]


def _fill(params: dict[str, torch.Tensor], length: int, max_bytes: int, bits: Any) -> bytes:
    """The file of the most (strongest) atoms that fits in ``max_bytes`` (bisection)."""
    low, high = 1, params["amplitude"].shape[0]
    best = codec.encode(_trim(params, 1), SR, length, bits)
    while low <= high:
        mid = (low + high) // 2
        data = codec.encode(_trim(params, mid), SR, length, bits)
        if len(data) <= max_bytes:
            best, low = data, mid + 1
        else:
            high = mid - 1
    return best


def atoms_at_budget(x: np.ndarray, max_bytes: int, steps: int = 600, preset: str = "speech",
                    bits_per_atom: float = 27.5, cache: Path | None = None
                    ) -> tuple[bytes, dict[str, Any]]:
    """Fit atoms for a byte budget and encode the best file that fits; returns its bytes and how
    it was made.

    A file is any subset of atoms, so the weakest atoms are dropped until it fits. When pruning
    during the fit left a file under 93 % of the budget, the fit is repeated with proportionally
    more atoms (at most three fits). Like any encoder that has the original, it then tries the
    allocations of :data:`BIT_CANDIDATES` and keeps the one whose decoded file scores the best SNR.
    ``cache`` keeps fitted parameters so that re-encoding does not need a new fit.
    """
    length = x.shape[-1]
    path = cache / f"{preset}_{max_bytes}_{steps}.pt" if cache is not None else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        params, info = saved["params"], saved["info"]
    else:
        n = max(8, int(max_bytes * 8 / bits_per_atom * 1.04))
        fit_seconds = 0.0
        for _ in range(3):  # pruning may leave fewer atoms than the budget pays for: fit again
            start = time.perf_counter()
            result = atoms_fit.fit(x, SR, _recipe(n, steps, preset), progress=False)
            fit_seconds += time.perf_counter() - start
            params = result.model.params()
            size = len(codec.encode(params, SR, length, DEFAULT_BITS))
            if size >= 0.93 * max_bytes:
                break
            n = int(n * max_bytes / size * 1.05)
        info = {"fitted_atoms": int(params["amplitude"].shape[0]), "preset": preset,
                "fit_snr": round(result.history["snr"][-1], 2),
                "fit_seconds": round(fit_seconds, 1)}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"params": params, "info": info}, path)
    best: tuple[float, bytes, Any] | None = None
    for bits in BIT_CANDIDATES:
        data = _fill(params, length, max_bytes, bits)
        snr = float(metrics.snr(x, codec.decode_audio(data)[0]))
        if best is None or snr > best[0]:
            best = (snr, data, bits)
    info = {**info, "stored_atoms": codec.read_header(best[1])["n_atoms"], "bits": dict(best[2])}
    return best[1], info


# --------------------------------------------------------------------------- rate-distortion
def bench_rd(clips: list[str], targets: list[float], steps: int, out: Path,
             cache: Path | None = None) -> dict[str, Any]:
    data = json.loads(out.read_text()).get("rate_distortion", {}) if out.is_file() else {}
    for clip in clips:
        x = load_clip(clip)
        entries = {(e["method"], e["target_kbps"]): e for e in data.get(clip, [])}
        for target in targets:
            mp3 = baselines.match_bitrate(x, SR, "mp3", target,
                                          levels=np.round(np.arange(0.5, 1.0, 0.01), 2))
            budget = mp3["bytes"]
            opus = baselines.match_bitrate(x, SR, "opus", mp3["kbps"],
                                           levels=np.round(np.arange(0.5, 1.0, 0.005), 3))
            rows = {
                "mp3": {**scores(x, mp3["decoded"], mp3["bytes"]),
                        "setting": f"CBR, compression_level={mp3['compression_level']}",
                        "delay_samples": mp3["lag"]},
                "opus": {**scores(x, opus["decoded"], opus["bytes"]),
                         "setting": f"compression_level={opus['compression_level']}",
                         "delay_samples": opus["lag"]},
            }
            for kind in ("mdct", "stft"):
                coded, k = baselines.topk_at_bytes(x, SR, budget, kind, size=256 if kind ==
                                                   "mdct" else 512)
                decoded, _ = baselines.topk_decode(coded)
                rows[f"top-K {kind.upper()}"] = {**scores(x, decoded, len(coded)),
                                                 "setting": f"K={k}"}
            file_bytes, info = atoms_at_budget(x, budget, steps, PRESET_OF[clip], cache=cache)
            decoded, _ = codec.decode_audio(file_bytes)
            rows["atoms"] = {**scores(x, decoded, len(file_bytes)), **info,
                             "setting": f"{info['stored_atoms']} atoms"}
            for method, row in rows.items():
                entries[(method, target)] = {"method": method, "target_kbps": target, **row}
                print(f"{clip:6s} {target:4.0f} kbps  {method:12s} {row['kbps']:6.2f} kbit/s  "
                      f"SNR {row['snr']:6.2f} dB  {row['setting']}", flush=True)
            data[clip] = sorted(entries.values(), key=lambda e: (e["target_kbps"], e["method"]))
            save("rate_distortion", data, out)
    return data


# --------------------------------------------------------------------------- the claimed table
def bench_claims(steps: int) -> list[dict[str, Any]]:
    rows = []
    for name, clip, n_atoms, ratio, snr, kbps in CLAIMED:
        x = load_clip(clip)
        result = atoms_fit.fit(x, SR, atoms_fit.preset(clip, n_atoms=n_atoms, steps=steps,
                                                       grow_at=()), progress=False)
        params = result.model.params()
        data = codec.encode(params, SR, x.shape[-1], 8)  # the reference's --bits_per_param 8
        decoded, _ = codec.decode_audio(data)
        tuned = codec.encode(params, SR, x.shape[-1], DEFAULT_BITS)
        with torch.no_grad():
            unquantized = result.model().numpy()
        # as published: bytes from a formula (atoms x 5 parameters x 8 bits), original phase
        formula_bytes = n_atoms * 5 * 8 // 8
        cheat = baselines.with_original_phase(decoded, x)
        honest = scores(x, decoded, len(data))
        rows.append({
            "row": name, "clip": clip, "gaussians": n_atoms,
            "claimed": {"ratio": ratio, "snr": snr, "kbps": kbps},
            "as_published": {"bytes": formula_bytes,
                             "kbps": codec.bitrate_kbps(formula_bytes, x.shape[-1], SR),
                             "ratio": codec.compression_ratio(formula_bytes, x.shape[-1]),
                             "snr_with_original_phase": float(metrics.snr(x, cheat))},
            "honest": {**honest, "snr_before_quantization": float(metrics.snr(x, unquantized))},
            "honest_default_bits": scores(x, codec.decode_audio(tuned)[0], len(tuned)),
        })
        print(f"{name:8s} {n_atoms:5d} atoms: claimed {snr} dB at {kbps} kbps, {ratio}x; "
              f"formula {rows[-1]['as_published']['kbps']:.2f} kbps, original phase "
              f"{rows[-1]['as_published']['snr_with_original_phase']:.2f} dB; honest "
              f"{honest['kbps']:.2f} kbps, {honest['ratio']:.1f}x, SNR {honest['snr']:.2f} dB",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("timing", "rd", "claims"), action="append")
    parser.add_argument("--clips", nargs="*", default=["speech", "music"])
    parser.add_argument("--targets", type=float, nargs="*", default=list(TARGETS_KBPS))
    parser.add_argument("--steps", type=int, default=600, help="Adam steps per atom fit")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for fitted atoms, so that a rerun re-encodes without fitting")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); the timing is saved as "
                             "'timing_threads_N' then")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.only or ["timing", "rd", "claims"]
    save("machine", machine(), args.out)
    if "timing" in sections:
        timing = bench_timing()
        print(json.dumps(timing, indent=1), flush=True)
        save(f"timing_threads_{args.threads}" if args.threads else "timing", timing, args.out)
    if "rd" in sections:
        bench_rd(args.clips, args.targets, args.steps, args.out, args.cache)
    if "claims" in sections:
        save("claims", bench_claims(3000 if args.steps >= 600 else args.steps), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
