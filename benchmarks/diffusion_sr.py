"""Diffusion audio super-resolution (notebook 05): quality, speed and memory on the CPU.

Run: ``.venv/bin/python benchmarks/diffusion_sr.py --minutes 15`` (about 15 minutes of training
plus ~10 minutes of evaluation on 2 CPU cores). ``--fast`` is a smoke run (1 minute of training,
short clips) whose numbers mean nothing.

What it does, for 4x bandwidth extension 11.025 -> 44.1 kHz:

1. trains :class:`labkit.models.diffusion.SuperResDiffusion` with the shipped config
   (``labkit/configs/superres.yaml``) for ``--minutes`` of wall clock on the built-in toy-MUSDB
   training mixtures (``runs/bench_superres``; an existing run there is resumed, a finished one is
   reused);
2. scores it on held-out audio: ``--clip-seconds`` from the middle of each toy-MUSDB *test*
   track (stereo) and a speech-like clip (:func:`labkit.signals.speech_like`), each reduced to
   11.025 kHz with soxr. Methods: the model (``--steps`` DDIM steps, guidance ``--guidance``),
   soxr resampling back to 44.1 kHz (the standard baseline) and the band-limited input at 44.1 kHz
   (for the exact 4x case the input *is* the soxr signal). Scores: LSD in bels
   (:func:`labkit.metrics.lsd`: 2048/512 Hann STFT, ``mean_frames sqrt(mean_bins (log10 P_ref -
   log10 P_est)^2)`` with ``eps = 1e-10`` added to both powers, the same for every method) over
   the full band (the headline) and over the high band only (5.5125-22.05 kHz), and SNR in dB;
3. robustness: the same model on other degradations of the test tracks (Butterworth, Chebyshev,
   elliptic, brick-wall low-passes at several cutoffs, a real MP3 round trip), input vs model;
   and a sweep of guidance scales and step counts on the same few clips;
4. real-time factor (processing seconds / audio seconds, 1 torch thread, CFG on) for 10, 25 and 50
   DDIM steps on a 10 s stereo clip;
5. peak memory of ``labkit upsample``'s streaming path (:func:`labkit.superres.upsample_file`) on a
   10 s and a 60 s file, each in a fresh subprocess: ``ru_maxrss`` of the whole process, and the
   highest resident memory sampled every 5 ms while the file is processed, beside the resident
   memory just before (after importing torch and loading the model).

Writes ``benchmarks/results/diffusion_sr.json`` and prints the tables. The machine is shared with
other jobs: the load average before and after is recorded, and wall-clock numbers (training budget
and RTF) are pessimistic when it was high.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "diffusion_sr.json"
SR, LOW = 44100, 11025
ROBUSTNESS = [("butter", 4410.0), ("cheby1", 5000.0), ("ellip", 6000.0), ("brickwall", 5512.5),
              ("butter", 6615.0), ("mp3", None)]


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def test_clips(seconds: float, fast: bool) -> dict[str, np.ndarray]:
    """Held-out references at 44.1 kHz: the middle of every toy-MUSDB test track, and speech."""
    from labkit import signals
    from labkit.data import find_tracks, toy

    tracks = find_tracks(toy.ensure("fast" if fast else "full", progress=False), split="test")
    clips = {}
    for track in tracks:
        start = max(0.0, (track.duration - seconds) / 2)
        clips[track.name] = track.load_mixture(start=start, duration=min(seconds, track.duration))
    clips["speech-like"] = signals.speech_like(seconds, SR, seed=7)
    return clips


def table(rows: dict[str, dict[str, float]], keys=("lsd", "lsd_high", "snr")) -> str:
    lines = [f"{'method':<28}" + "".join(f"{k:>12}" for k in keys)]
    for name, scores in rows.items():
        lines.append(f"{name:<28}" + "".join(f"{scores[k]:>12.3f}" for k in keys))
    return "\n".join(lines)


def train(args: argparse.Namespace) -> dict:
    from labkit import superres

    config = superres.load_config()
    started = time.perf_counter()
    result = superres.train_superres(args.workdir, config, minutes=args.minutes, resume="auto",
                                     progress=not args.quiet)
    history = result.history
    return {
        "workdir": str(args.workdir), "checkpoint": str(result.checkpoint),
        "minutes_budget": args.minutes, "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "wall_seconds_this_session": round(time.perf_counter() - started, 1),
        "stopped_by": result.stopped_by, "final_train_loss": history["train_loss"][-1],
        "best_val_loss": min(history["val_loss"]) if history["val_loss"] else None,
        "threads": config["train"]["threads"], "num_workers": config["train"]["num_workers"],
        "batch_size": config["train"]["batch_size"],
        "segment_seconds": config["data"]["segment_seconds"],
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "model": dict(config["model"]),
    }


def evaluate_all(args: argparse.Namespace, checkpoint: Path) -> dict:
    import torch

    from labkit import superres

    torch.set_num_threads(1)
    clips = test_clips(args.clip_seconds, args.fast)
    upsampler = superres.load_upsampler(checkpoint, steps=args.steps,
                                        guidance_scale=args.guidance)
    music = {k: v for k, v in clips.items() if k != "speech-like"}
    speech = {"speech-like": clips["speech-like"]}
    out: dict = {"settings": {"steps": args.steps, "guidance_scale": args.guidance,
                              "clip_seconds": args.clip_seconds, "lsd_eps": superres.LSD_EPS,
                              "music_clips": list(music), "case": "soxr 44.1 -> 11.025 kHz"}}
    started = time.perf_counter()
    per_clip = superres.evaluate(upsampler, music, SR, progress=False)
    out["music"] = {"mean": superres.summarize(per_clip), "per_clip": per_clip}
    per_clip = superres.evaluate(upsampler, speech, SR, progress=False)
    out["speech"] = {"mean": superres.summarize(per_clip), "per_clip": per_clip}
    out["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    model, baseline = out["music"]["mean"]["model"], out["music"]["mean"]["soxr"]
    out["lsd_ratio_music"] = model["lsd"] / baseline["lsd"]
    out["lsd_high_ratio_music"] = model["lsd_high"] / baseline["lsd_high"]
    out["lsd_ratio_speech"] = (out["speech"]["mean"]["model"]["lsd"]
                               / out["speech"]["mean"]["soxr"]["lsd"])

    # the same model on degradations other than the exact 4x case
    few = dict(list(music.items())[:args.robustness_clips])
    robustness = {}
    for kind, cutoff in ROBUSTNESS:
        scores = superres.summarize(superres.evaluate(upsampler, few, SR, kind=kind,
                                                      cutoff_hz=cutoff))
        robustness[f"{kind}@{cutoff:.0f}" if cutoff else kind] = {
            "input": scores["input"], "model": scores["model"]}
    out["robustness"] = robustness

    # guidance and steps on the same few clips: what the defaults trade
    sweep = {}
    for steps, guidance in ((25, 0.0), (25, 0.5), (25, 1.0), (25, 1.5), (25, 3.0), (10, 1.5),
                            (50, 1.5)):
        runner = superres.load_upsampler(checkpoint, steps=steps, guidance_scale=guidance)
        scores = superres.summarize(superres.evaluate(runner, few, SR))["model"]
        sweep[f"steps={steps},w={guidance:g}"] = scores
    out["sweep"] = {"clips": list(few), "model": sweep}
    return out


def real_time_factor(checkpoint: Path, steps_list: list[int], seconds: float) -> dict:
    import torch

    from labkit import superres
    from labkit.audio import resample

    torch.set_num_threads(1)
    clip = test_clips(seconds, fast=False)
    reference = next(iter(clip.values()))
    low = resample(reference, SR, LOW)
    out = {}
    for steps in steps_list:
        upsampler = superres.load_upsampler(checkpoint, steps=steps, guidance_scale=1.5)
        started = time.perf_counter()
        cpu = time.process_time()
        superres.upsample(low, LOW, upsampler)
        wall = time.perf_counter() - started
        out[str(steps)] = {"rtf": round(wall / seconds, 3),
                           "cpu_seconds_per_audio_second": round(
                               (time.process_time() - cpu) / seconds, 3)}
    return {"clip_seconds": seconds, "channels": int(reference.shape[0]), "guidance_scale": 1.5,
            "threads": 1, "chunk_seconds": 4.0, "griffin_lim_iters": 16, "by_steps": out}


_CHILD = """
import os, resource, sys, threading, time
from labkit import superres

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

up = superres.load_upsampler(sys.argv[1], steps=int(sys.argv[4]))
before = rss_mb()
highest = [before]
done = threading.Event()

def watch():  # the resident memory every 5 ms while the file is processed
    while not done.wait(0.005):
        highest[0] = max(highest[0], rss_mb())

watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
t = time.perf_counter()
superres.upsample_file(sys.argv[2], up, sys.argv[3], progress=False)
elapsed = time.perf_counter() - t
done.set()
watcher.join()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB -> MB
print(before, max(highest[0], rss_mb()), peak, elapsed)
"""


def memory(checkpoint: Path, durations: list[int], steps: int) -> dict:
    """Peak RSS of upsample_file on files of each duration, each in a fresh process."""
    import soundfile as sf

    from labkit.audio import resample
    from labkit.data import find_tracks, toy

    tracks = find_tracks(toy.ensure("full", progress=False), split="test")
    pieces = [resample(t.load_mixture(), SR, LOW) for t in tracks]
    music = np.concatenate(pieces, axis=-1)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for seconds in durations:
            path = Path(folder) / f"in_{seconds}.wav"
            n = seconds * LOW
            repeated = np.tile(music, (1, n // music.shape[-1] + 1))[:, :n]
            sf.write(path, repeated.T, LOW, subtype="FLOAT")
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(checkpoint), str(path),
                 str(Path(folder) / f"out_{seconds}.wav"), str(steps)],
                capture_output=True, text=True, check=True, env={**os.environ,
                                                                 "OMP_NUM_THREADS": "1"})
            before, during, peak, wall = (float(v) for v in done.stdout.split()[-4:])
            results[str(seconds)] = {"peak_rss_mb": round(peak, 1),
                                     "rss_before_mb": round(before, 1),
                                     "peak_rss_while_upsampling_mb": round(during, 1),
                                     "working_mb": round(during - before, 1),
                                     "seconds": round(wall, 1)}
    first, last = (results[str(d)] for d in (durations[0], durations[-1]))
    return {"steps": steps, "chunk_seconds": 4.0, "by_duration": results,
            "ratio_longest_to_shortest": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
            "ratio_while_upsampling": round(last["peak_rss_while_upsampling_mb"]
                                            / first["peak_rss_while_upsampling_mb"], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_superres")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps for the quality table")
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--robustness-clips", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--fast", action="store_true", help="smoke run: numbers mean nothing")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--only", choices=("quality", "rtf", "memory"), default=None,
                        help="re-measure one part and update it in an existing --out file "
                             "(the training run must exist)")
    args = parser.parse_args(argv)
    if args.fast:
        args.minutes, args.clip_seconds, args.robustness_clips = 1.0, 3.0, 1
        args.workdir = args.workdir.with_name(args.workdir.name + "_fast")

    import torch

    import labkit

    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
               "torch": torch.__version__, "labkit": labkit.__version__,
               "load_average_start": load_average()}
    if args.only:
        report = json.loads(args.out.read_text())
        checkpoint = Path(report["training"]["checkpoint"])
        report.setdefault("remeasured", {})[args.only] = machine
    else:
        report = {"machine": machine, "fast": args.fast}
        report["training"] = train(args)
        checkpoint = Path(report["training"]["checkpoint"])
    if args.only in (None, "quality"):
        report["quality"] = evaluate_all(args, checkpoint)
    if args.only in (None, "rtf"):
        report["rtf"] = real_time_factor(checkpoint, [10, 25, 50], 3.0 if args.fast else 10.0)
    if args.only in (None, "memory"):
        report["memory"] = memory(checkpoint, [10, 60], steps=5 if args.fast else 10)
    (report["remeasured"][args.only] if args.only else report["machine"])[
        "load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    quality = report["quality"]
    print(f"\ntraining: {report['training']['steps']} steps in "
          f"{report['training']['train_seconds'] / 60:.1f} min ({report['training']['stopped_by']})")
    print("\nheld-out toy-MUSDB test tracks, 11.025 -> 44.1 kHz (mean over "
          f"{len(quality['settings']['music_clips'])} clips)")
    print(table(quality["music"]["mean"]))
    print(f"LSD ratio model / soxr: {quality['lsd_ratio_music']:.3f} (full band), "
          f"{quality['lsd_high_ratio_music']:.3f} (high band)")
    print("\nspeech-like clip")
    print(table(quality["speech"]["mean"]))
    print("\nother degradations (input -> model LSD)")
    for name, scores in quality["robustness"].items():
        print(f"  {name:<16} {scores['input']['lsd']:.3f} -> {scores['model']['lsd']:.3f}")
    print(f"\nsteps and guidance ({len(quality['sweep']['clips'])} clips, model LSD / SNR)")
    for name, scores in quality["sweep"]["model"].items():
        print(f"  {name:<18} {scores['lsd']:.3f} / {scores['snr']:.2f} dB")
    print("\nreal-time factor (1 thread): " + ", ".join(
        f"{k} steps {v['rtf']:.2f}" for k, v in report["rtf"]["by_steps"].items()))
    memory_report = report["memory"]
    print("peak RSS: " + ", ".join(
        f"{k} s: {v['peak_rss_mb']:.0f} MB (while upsampling {v['peak_rss_while_upsampling_mb']:.0f}"
        f" MB, {v['working_mb']:+.0f} MB over the {v['rss_before_mb']:.0f} MB before)"
        for k, v in memory_report["by_duration"].items())
          + f"; ratio 60 s / 10 s {memory_report['ratio_longest_to_shortest']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
