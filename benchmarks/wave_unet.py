"""Notebook 03's waveform U-Net: four-stem quality after a CPU time budget, and separation speed.

Run (full mode, the issue's setting: 15 minutes of training on 2 CPU threads, evaluation on every
test song of the built-in set, then a 3-minute song through ``labkit separate``; about 20 minutes
in all)::

    .venv/bin/python benchmarks/wave_unet.py --minutes 15

1. **Training**: :func:`labkit.stems.train_waveunet` with :data:`labkit.stems.RECIPE` (the
   course's WaveUNet at 22.05 kHz stereo) on the ``train`` split of the built-in toy-MUSDB set
   ("full": 32 training and 8 validation songs of 20 s at 44.1 kHz stereo), random 2 s segments
   with stems remixed across songs, batch 8, Adam 3e-3 (the filterbank at a tenth of that) with a
   cosine decay to a tenth over the budget (``train_waveunet``'s defaults), L1 loss, until the
   wall-clock budget is spent (``--max-steps`` instead fixes the step count); the weights of the
   lowest validation loss are kept. ``--stoller-minutes`` also trains Wave-U-Net for comparison.
2. **Quality**: every test song (10 x 20 s) separated with :func:`labkit.separate.separate` at
   44.1 kHz (the model's 22.05 kHz is resampled there and back); per-stem SDR in the MUSDB
   convention (BSSEval v4 images, median over 1 s frames, then median over songs) via
   :func:`labkit.metrics.sdr` (``backend="direct"``: museval's numbers, fast; ``--museval`` calls
   museval itself), beside the IRM2 oracle (4096/1024 STFT at 44.1 kHz) and do-nothing.
3. **Separation speed and memory**: a 3-minute stereo 44.1 kHz WAV (test songs back to back)
   through ``labkit separate`` in a fresh process with 2 threads: the real-time factor
   (separation time / 180 s; also with the process start-up and model loading) and the process's
   peak resident memory (``VmHWM``).

Writes ``benchmarks/results/wave_unet.json`` and prints the tables. ``--fast`` is a smoke test
(the small data set, a few steps, a 20 s song).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "wave_unet.json"
SONG_SECONDS = 180

_SEPARATE_WORKER = """
import json, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[4]))
from labkit.separate import separate_file
from labkit.stems import resolve_separator
model = resolve_separator(sys.argv[2], device="cpu")
loaded = time.perf_counter()
cpu = time.process_time()
separate_file(sys.argv[1], model, out_dir=sys.argv[3], progress=False)
done = time.perf_counter()
cpu = time.process_time() - cpu
peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"load_seconds": loaded - start, "separate_seconds": done - loaded,
                  "separate_cpu_seconds": cpu,
                  "total_seconds": done - start, "peak_rss_mb": peak}))
"""


def write_song(root: Path, path: Path, seconds: float) -> float:
    """Test mixtures back to back (stereo, 44.1 kHz, 16-bit WAV) up to ``seconds``; returns its
    duration."""
    from labkit.data import find_tracks

    parts, total = [], 0
    tracks = find_tracks(root, split="test")
    rate = tracks[0].sample_rate
    while total < seconds * rate:
        for track in tracks:
            audio = track.load_mixture()
            parts.append(audio)
            total += audio.shape[-1]
    song = np.concatenate(parts, axis=-1)[:, : round(seconds * rate)]
    sf.write(path, song.T, rate, subtype="PCM_16")
    return song.shape[-1] / rate


def separation_speed(model_path: Path, song: Path, duration: float, threads: int) -> dict:
    """Run ``separate_file`` on ``song`` in a fresh process; its timings and peak memory."""
    with tempfile.TemporaryDirectory(prefix="labkit-bench-sep-") as out:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-c", _SEPARATE_WORKER, str(song), str(model_path),
                               out, str(threads)], env=env, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"separation failed: {done.stderr[-2000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        written = sorted(p.name for p in Path(out).rglob("*.wav"))
    return {"song_seconds": round(duration, 2), "threads": threads,
            "separate_seconds": round(report["separate_seconds"], 2),
            "real_time_factor": round(report["separate_seconds"] / duration, 4),
            "separate_cpu_seconds": round(report["separate_cpu_seconds"], 2),
            "total_seconds_with_startup": round(report["total_seconds"], 2),
            "real_time_factor_with_startup": round(report["total_seconds"] / duration, 4),
            "peak_rss_mb": round(report["peak_rss_mb"], 1), "files": written}


def print_speed(speed: dict) -> None:
    print(f"separating a {speed['song_seconds']:.0f} s stereo 44.1 kHz file: "
          f"{speed['separate_seconds']:.1f} s (real-time factor {speed['real_time_factor']:.3f}; "
          f"{speed['real_time_factor_with_startup']:.3f} with start-up and loading), peak RSS "
          f"{speed['peak_rss_mb']:.0f} MB, {speed['threads']} threads", flush=True)


def speed_targets(speed: dict) -> dict:
    return {"real_time_factor": {"value": speed["real_time_factor"], "target": 0.15,
                                 "met": bool(speed["real_time_factor"] <= 0.15)},
            "peak_rss_mb": {"value": speed["peak_rss_mb"], "target": 2048,
                            "met": bool(speed["peak_rss_mb"] <= 2048)}}


def speed_only(args: argparse.Namespace, threads: int) -> int:
    """Re-measure separation speed with the trained model of ``--workdir``; update ``--out``."""
    from labkit.data import toy

    if args.workdir is None or not (args.workdir / "wave_unet").exists():
        raise SystemExit("--speed-only needs --workdir holding the trained run (wave_unet/)")
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    root = toy.ensure("fast" if args.fast else "full", progress=False)
    with tempfile.TemporaryDirectory(prefix="labkit-bench-song-") as tmp:
        song = Path(tmp) / "song.wav"
        duration = write_song(root, song, 20 if args.fast else SONG_SECONDS)
        speed = separation_speed(args.workdir / "wave_unet", song, duration, threads)
    print_speed(speed)
    speed["load_average"] = [round(x, 2) for x in os.getloadavg()]
    speed["command"] = "benchmarks/wave_unet.py " + " ".join(sys.argv[1:])
    report["separation"] = speed
    report.setdefault("targets", {}).update(speed_targets(speed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"updated {args.out}")
    return 0


def summarise(scores: dict) -> dict:
    """Per-stem medians, their mean, and the share of the oracle, per method."""
    from labkit.stems import STEMS, mean_sdr

    oracle = mean_sdr(scores["IRM2 oracle"])
    floor = mean_sdr(scores["do-nothing"])
    out = {}
    for name, result in scores.items():
        mean = mean_sdr(result)
        out[name] = {"sdr": {s: round(result["median"][s], 3) for s in STEMS},
                     "mean": round(mean, 3),
                     "fraction_of_oracle": round(mean / oracle, 3),
                     "gap_closed": round((mean - floor) / (oracle - floor), 3),
                     "separation_seconds": round(result["seconds"], 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget (wall clock)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train this many steps instead of a time budget")
    parser.add_argument("--stoller-minutes", type=float, default=0.0,
                        help="also train Wave-U-Net for this many minutes (0: skip)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--cpu", action="store_true",
                        help="train on the CPU even when a GPU is there (separation speed is "
                             "always measured on the CPU: the issue's bar is for 2 cores)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="run folders (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the runs in --workdir instead of starting again")
    parser.add_argument("--museval", action="store_true",
                        help="score with museval itself (slow) instead of labkit's direct "
                             "computation of the same numbers")
    parser.add_argument("--speed-threads", type=int, default=None,
                        help="threads for the separation-speed part (default: --threads)")
    parser.add_argument("--speed-only", action="store_true",
                        help="only re-measure separation speed and memory with the model in "
                             "--workdir, updating the JSON in --out (e.g. on a quiet machine "
                             "after training ran beside other jobs)")
    parser.add_argument("--fast", action="store_true", help="smoke test: tiny data and budget")
    parser.add_argument("--out", type=Path, default=RESULT, help="where to write the JSON")
    args = parser.parse_args(argv)

    from labkit.data import find_tracks, toy
    from labkit.oracles import separation_report
    from labkit.stems import (
        RECIPE,
        SDR_TITLE,
        STEMS,
        evaluate_stems,
        evaluation_tracks,
        train_waveunet,
    )

    torch.set_num_threads(args.threads)
    speed_threads = args.speed_threads or args.threads
    if args.speed_only:
        return speed_only(args, speed_threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="labkit-bench-wave-unet-"))
    root = toy.ensure("fast" if args.fast else "full")
    minutes = None if args.max_steps is not None else args.minutes
    max_steps = args.max_steps
    if args.fast:
        minutes, max_steps = None, args.max_steps or 5

    runs = {"WaveUNet": ("wave_unet", {"name": "wave_unet", **RECIPE}, minutes, max_steps)}
    if args.stoller_minutes > 0:
        runs["Wave-U-Net (Stoller)"] = ("wave_unet_stoller", {"name": "wave_unet_stoller"},
                                        None if args.fast else args.stoller_minutes,
                                        2 if args.fast else None)
    models, training = {}, {}
    for label, (folder, config, budget, steps) in runs.items():
        cpu_start = time.process_time()
        result = train_waveunet(
            workdir / folder, model_config=config, root=root, minutes=budget, max_steps=steps,
            segment_seconds=1.0 if args.fast else 2.0, batch_size=4 if args.fast else 8,
            device="cpu" if args.cpu else None, threads=args.threads,
            resume="auto" if args.resume else None, overwrite=not args.resume, progress=False)
        models[label] = result.model
        history = result.history
        training[label] = {
            "config": config, "steps": result.steps, "seconds": round(result.seconds, 1),
            "steps_per_second": round(result.steps_per_second, 3),
            "process_cpu_seconds": round(time.process_time() - cpu_start, 1),
            "stopped_by": result.stopped_by, "settings": result.settings,
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "final_train_loss": history["train_loss"][-1] if history["train_loss"] else None,
            "best_val_loss": min(history["val_loss"]) if history["val_loss"] else None,
        }
        print(f"{label}: {result.steps} steps in {result.seconds:.0f} s "
              f"({result.steps_per_second:.2f} steps/s), stopped by {result.stopped_by}",
              flush=True)

    tracks = evaluation_tracks(root, seconds=4.0 if args.fast else None,
                               subset=2 if args.fast else None)
    rate = find_tracks(root, split="test")[0].sample_rate
    scores = evaluate_stems(models, tracks, sr=rate,
                            backend="museval" if args.museval else "direct", progress=False)
    table = separation_report(scores, sources=STEMS, metric_name=SDR_TITLE)
    print(table, flush=True)

    with tempfile.TemporaryDirectory(prefix="labkit-bench-song-") as tmp:
        song = Path(tmp) / "song.wav"
        duration = write_song(root, song, 20 if args.fast else SONG_SECONDS)
        model_path = workdir / "wave_unet"
        speed = separation_speed(model_path, song, duration, speed_threads)
    print_speed(speed)

    summary = summarise(scores)
    model_mean = summary["WaveUNet"]["mean"]
    oracle_mean = summary["IRM2 oracle"]["mean"]
    report = {
        "benchmark": "four-stem waveform U-Net (notebook 03): quality after a CPU budget, "
                     "separation speed and memory",
        "command": "benchmarks/wave_unet.py " + " ".join(argv if argv is not None
                                                          else sys.argv[1:]),
        "data": ("toy-MUSDB 'fast' preset" if args.fast else
                 "toy-MUSDB 'full' preset: 32 train + 8 valid songs, 10 test songs of 20 s, "
                 "44.1 kHz stereo"),
        "metric": f"{SDR_TITLE}, dB, at 44.1 kHz stereo"
                  + (" (museval)" if args.museval else " (labkit.metrics.sdr, backend 'direct': "
                                                       "museval's numbers)"),
        "oracle": "IRM2 (|S|^2 ratio masks) on a 4096/1024 Hann STFT at 44.1 kHz, mixture phase",
        "training": training,
        "scores": summary,
        "per_track": {name: result["per_track"] for name, result in scores.items()},
        "table": table,
        "separation": speed,
        "targets": {
            "mean_sdr_fraction_of_oracle": {"value": round(model_mean / oracle_mean, 3),
                                            "target": 0.5,
                                            "met": bool(model_mean / oracle_mean >= 0.5)},
            **speed_targets(speed),
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads, "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "note": "2 CPU cores shared with other jobs when measured: wall-clock "
                            "budgets reach fewer steps than on a quiet machine, and timings "
                            "are pessimistic"},
    }
    if not math.isfinite(model_mean):
        report["targets"]["mean_sdr_fraction_of_oracle"]["met"] = False
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
