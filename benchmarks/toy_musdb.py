"""toy-MUSDB: how fast it generates, and how hard it is to separate.

Run: ``.venv/bin/python benchmarks/toy_musdb.py [--preset full|fast] [--workers 2]``
(full: about 1 minute of generation plus ~8 minutes of museval on 2 CPU cores).

1. **Generation time** of the "fast" preset and of the "full" preset (40 + 10 tracks of 20 s at
   44.1 kHz stereo, i.e. the "50 x 20 s" figure), each into a fresh temporary folder, with the
   default number of worker processes; plus the CPU time of rendering one 20 s track.
2. **Difficulty** on the test split of ``--preset``: the SDR of the IRM2 oracle (STFT 4096/1024,
   the ceiling of a mask-based model) and of doing nothing (the mixture as the estimate of every
   stem, the floor), per stem, in the MUSDB convention (museval BSSEval v4, 1 s frames, median over
   frames, then median over tracks). Real MUSDB18 shows an IRM2 vocals SDR of roughly 9-12 dB.
3. **Per-engine oracle**: the IRM2 vocals SDR per vocal engine (how the engines differ in
   difficulty), and the spectral balance of stems and mixture (energy above 5 and 11 kHz, and the
   long-term spectral slope of the mixture in dB/octave between 100 Hz and 10 kHz).

Writes ``benchmarks/results/toy_musdb.json`` and prints a markdown table. Timings were taken on a
2-core machine shared with other jobs: treat them as pessimistic.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from labkit.data import toy

RESULT = HERE / "results" / "toy_musdb.json"
STEMS = toy.STEMS


def time_generation(preset: str, workers: int | None) -> dict:
    """Wall time of generating ``preset`` into a fresh folder, and of asking for it again."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / preset
        t0 = time.perf_counter()
        toy.generate(root, **toy.PRESETS[preset], workers=workers, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        toy.generate(root, **toy.PRESETS[preset], workers=workers, progress=False)
        again = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    cfg = toy.PRESETS[preset]
    return {"preset": preset, "tracks": cfg["n_train"] + cfg["n_test"],
            "seconds_per_track": cfg["seconds"], "wall_s": round(cold, 2),
            "cached_call_s": round(again, 4), "size_mb": round(size / 1e6, 1)}


def cpu_per_track(seconds: float = 20.0, n: int = 3) -> float:
    """CPU seconds to render one track of ``seconds`` (in this process, no file writing)."""
    toy.render_track(999, 2.0)  # imports and caches out of the way
    t0 = time.process_time()
    for seed in range(n):
        toy.render_track(1000 + seed, seconds)
    return (time.process_time() - t0) / n


def _spectral(stems: dict[str, np.ndarray], sr: int) -> dict:
    """Energy above 5 and 11 kHz (dB re total) per stem and mixture; the mixture's slope."""
    out = {}
    signals = {**stems, "mixture": sum(stems.values())}
    for name, x in signals.items():
        power = np.abs(np.fft.rfft(x.mean(axis=0).astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / sr)
        total = power.sum() + 1e-30
        out[name] = {f"above_{k}k_db": round(float(10 * np.log10(power[freqs > k * 1000].sum()
                                                                  / total + 1e-30)), 1)
                     for k in (5, 11)}
        if name == "mixture":
            edges = 100.0 * 2.0 ** np.arange(0, 7.0)  # octave bands 100 Hz .. 6.4 kHz (to 12.8k)
            levels = [10 * np.log10(power[(freqs >= lo) & (freqs < 2 * lo)].mean() + 1e-30)
                      for lo in edges]
            # Mean power per Hz falls by the slope + 3 dB/octave for a "flat per octave" signal.
            slope = np.polyfit(np.arange(len(levels)), levels, 1)[0] + 10 * np.log10(2)
            out[name]["slope_db_per_octave"] = round(float(slope), 2)
    return out


def _evaluate(args: tuple[str, str, str]) -> dict:
    """Score one method on the test split (runs in its own process)."""
    import torch

    from labkit.data import find_tracks
    from labkit.metrics import aggregate, sdr
    from labkit.oracles import do_nothing, evaluate_tracks, oracle

    torch.set_num_threads(1)
    root, method, backend = args
    tracks = find_tracks(root, split="test")
    sr = tracks[0].sample_rate
    estimator = oracle("irm2") if method == "IRM2 oracle" else (
        lambda mixture: do_nothing(mixture, len(STEMS)))
    items = ((t.name, t.load_mixture(), t.load(STEMS)) for t in tracks)
    t0 = time.perf_counter()
    if backend == "museval":
        result = evaluate_tracks(items, estimator, metric="sdr", sr=sr, sources=STEMS,
                                 progress=False)
    else:
        per_track = {}
        for name, mixture, stems in items:
            estimates = estimator(mixture, stems) if method == "IRM2 oracle" else estimator(
                mixture)
            values = sdr(stems, estimates, sr=sr, backend="direct")
            per_track[name] = {s: float(v) for s, v in zip(STEMS, values)}
        result = {"metric": "SDR (BSSEval v4 images, direct backend)",
                  "oracle": method == "IRM2 oracle", "per_track": per_track,
                  "median": aggregate(list(per_track.values()))}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return {method: result}


def evaluate(root: Path, backend: str) -> dict:
    """IRM2 oracle and do-nothing SDR on the test split, the two in parallel processes."""
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_evaluate, [(str(root), m, backend)
                                          for m in ("IRM2 oracle", "do-nothing")]))
    return {k: v for part in parts for k, v in part.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(toy.PRESETS), default="full",
                        help="which preset's test split to score (default: full)")
    parser.add_argument("--workers", type=int, default=None,
                        help="generation processes (default: min(2, cpu_count))")
    parser.add_argument("--backend", choices=("museval", "direct"), default="museval",
                        help="SDR backend: museval (the reported numbers) or labkit's direct "
                             "equivalent (same numbers to ~1e-12 dB, seconds instead of minutes)")
    parser.add_argument("--skip-full-timing", action="store_true",
                        help="do not time the full preset's generation (only with --preset fast)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    timing = [time_generation("fast", args.workers)]
    print(f"fast preset: {timing[-1]}", flush=True)
    if not args.skip_full_timing:
        timing.append(time_generation("full", args.workers))
        print(f"full preset: {timing[-1]}", flush=True)
    cpu = cpu_per_track()
    print(f"CPU per 20 s track: {cpu:.2f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = toy.generate(Path(tmp) / args.preset, **toy.PRESETS[args.preset],
                            workers=args.workers, progress=False)
        metas = {p.name: json.loads((p / "meta.json").read_text())
                 for p in sorted((root / "test").iterdir())}
        scores = evaluate(root, args.backend)
        spectra = {}
        for name in metas:
            track = toy.render_track(**metas[name]["render"])[0]
            for key, value in _spectral(track, metas[name]["sample_rate"]).items():
                spectra.setdefault(key, []).append(value)
    spectral = {name: {k: round(float(np.median([v[k] for v in values])), 2)
                       for k in values[0]} for name, values in spectra.items()}

    from labkit.oracles import report_data, separation_report

    metric = ("SDR (museval BSSEval v4, 1 s frames, median over frames then tracks)"
              if args.backend == "museval" else
              "SDR (BSSEval v4 images via labkit's direct backend, 1 s frames, medians)")
    table = separation_report({m: scores[m] for m in ("IRM2 oracle", "do-nothing")},
                              sources=STEMS, metric_name=metric)
    per_engine: dict[str, list[float]] = {}
    for name, meta in metas.items():
        per_engine.setdefault(meta["engines"]["vocals"], []).append(
            scores["IRM2 oracle"]["per_track"][name]["vocals"])
    result = {
        "benchmark": "toy_musdb", "preset": args.preset, "backend": args.backend,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in load_before],
                    "note": "2-core machine shared with other jobs: timings are pessimistic"},
        "generation": timing, "cpu_seconds_per_20s_track": round(cpu, 3),
        "test_tracks": len(metas),
        "sdr": report_data({m: scores[m] for m in ("IRM2 oracle", "do-nothing")},
                           sources=STEMS, metric_name=metric),
        "per_track": {m: scores[m]["per_track"] for m in scores},
        "eval_seconds": {m: scores[m]["seconds"] for m in scores},
        "irm2_vocals_by_vocal_engine": {k: [round(v, 2) for v in vals]
                                        for k, vals in sorted(per_engine.items())},
        "engines": {name: meta["engines"] for name, meta in metas.items()},
        "vocals_to_accompaniment_db": {name: meta["mix"]["vocals_to_accompaniment_db"]
                                       for name, meta in metas.items()},
        "spectral_balance_median": spectral,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1))
    print(table)
    print("IRM2 vocals by vocal engine:", result["irm2_vocals_by_vocal_engine"])
    print("spectral balance (median over test tracks):", json.dumps(spectral))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
