"""Single-song fine-tuning and the separation command, measured (notebook 06, issue #8).

Run: ``.venv/bin/python benchmarks/single_song.py [--songs 5] [--jobs 5] [--minutes 3]
[--clock process] [--lr 3e-4]`` (on an idle 2-core machine about ``songs / 2 x (minutes + 1)``
minutes with two jobs, plus a minute for ``labkit separate``).

1. **Fine-tuning** on held-out built-in songs (toy-MUSDB "full" test tracks, never seen by the
   shipped models): each song is split in time with :func:`labkit.finetune.time_split` (the first
   70 % trains, the last 30 % is held out, a guard band of the model's receptive field between),
   the shipped vocals model is fine-tuned on the first part with the vocals stem for at most
   ``--minutes``, and the vocals SDR on the held-out part is measured for the shipped model, the
   fine-tuned model and the IRM2 oracle (MUSDB convention: BSSEval v4 images SDR, median over 1 s
   frames; :func:`labkit.metrics.sdr`, "direct" backend). The criterion of the issue: the median
   improvement over the songs is at least 1 dB.
2. **labkit separate** on a 3-minute MP3 (toy-MUSDB test tracks joined, 44.1 kHz stereo, written
   with soundfile's MP3 encoder): the command is run as a subprocess with the default shipped
   model; its wall time, CPU time (user + system) and peak resident memory are recorded.

The machine is shared with other jobs, so wall times are pessimistic. ``--clock process`` (the
default) budgets fine-tuning by this process's CPU time instead of the wall clock, and
``--threads 1`` (the default) runs torch on one thread: 3 minutes of one core's CPU time is at
most what 3 minutes on 2 dedicated cores give, so the budget is honest under contention too.
Writes ``benchmarks/results/single_song.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

RESULT = HERE / "results" / "single_song.json"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the shared machine was)."""
    return [round(x, 2) for x in os.getloadavg()]


def finetune_one(track, args) -> dict:
    """Split one toy-MUSDB track in time, fine-tune, and score before/after/oracle."""
    from labkit import finetune as ft
    from labkit.core import device
    from labkit.pretrained import resolve_model

    model = resolve_model(args.model, task="vocals", device=device())

    song = ft.load_song(track.path / "mixture.wav", {"vocals": track.path / "vocals.wav"},
                        name=track.name)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        run = ft.finetune(model, song, workdir=Path(tmp) / "run",
                          train_fraction=args.train_fraction, epochs=args.epochs,
                          steps_per_epoch=args.steps_per_epoch, lr=args.lr,
                          batch_size=args.batch_size, minutes=args.minutes, clock=args.clock,
                          freeze=args.freeze_encoder, seed=args.seed, progress=False,
                          threads=args.threads)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    before = ft.evaluate_holdout(model, song, run.split, trained=[], oracle=True)
    after = ft.evaluate_holdout(run.model, song, run.split, trained=run.trained)
    row = {
        "song": track.name, "seconds": round(song.seconds, 2),
        "split": run.split.describe(), "guard_s": round(run.split.guard / song.sr, 3),
        "shipped_db": round(before["sdr"]["vocals"], 2),
        "finetuned_db": round(after["sdr"]["vocals"], 2),
        "oracle_db": round(before["oracle_sdr"]["vocals"], 2),
        "steps": run.steps, "finetune_wall_s": round(wall, 1), "finetune_cpu_s": round(cpu, 1),
        "stopped_by": run.stopped_by,
    }
    row["improvement_db"] = round(row["finetuned_db"] - row["shipped_db"], 2)
    return row


def make_mp3(path: Path, seconds: float) -> Path:
    """A ``seconds``-long 44.1 kHz stereo MP3 of toy-MUSDB test mixtures joined end to end."""
    from labkit.audio import load, save
    from labkit.data import find_tracks, toy

    tracks = find_tracks(toy.ensure("full", progress=False), split="test")
    parts, total = [], 0
    while total < seconds * 44100:
        for track in tracks:
            audio, _ = load(track.path / "mixture.wav")
            parts.append(audio)
            total += audio.shape[-1]
    audio = np.concatenate(parts, axis=-1)[:, :round(seconds * 44100)]
    return save(path, audio, 44100)


def time_separate(args) -> dict:
    """Run ``labkit separate`` on a 3-minute MP3 in a subprocess: wall, CPU, peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        mp3 = make_mp3(Path(tmp) / "song.mp3", args.mp3_seconds)
        command = [sys.executable, "-m", "labkit", "separate", str(mp3), "--out", tmp]
        if args.separate_model:
            command += ["--model", args.separate_model]
        env = dict(os.environ, OMP_NUM_THREADS="2")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            return {"error": (done.stderr or done.stdout)[-2000:], "command": command[2:]}
        outputs = sorted(p.name for p in (Path(tmp) / "song_separated").iterdir())
    return {
        "command": "labkit separate song.mp3 --out DIR"
                   + (f" --model {args.separate_model}" if args.separate_model else ""),
        "mp3_seconds": args.mp3_seconds, "outputs": outputs, "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        # ru_maxrss of the children: the largest child, which is the separate command
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--songs", type=int, default=5, help="held-out songs (toy-MUSDB test tracks)")
    p.add_argument("--model", default=None, help="model to fine-tune (default: shipped vocals)")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--clock", choices=("process", "wall"), default="process")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="songs fine-tuned at once (processes)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--train-fraction", type=float, default=0.7)
    p.add_argument("--freeze-encoder", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mp3-seconds", type=float, default=180.0)
    p.add_argument("--separate-model", default=None,
                   help="--model for labkit separate (default: its own default)")
    p.add_argument("--skip-finetune", action="store_true")
    p.add_argument("--skip-separate", action="store_true")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)

    from labkit.data import find_tracks, toy
    from labkit.pretrained import resolve_model

    result = {"settings": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_start": load_average()},
              "metric": "vocals SDR on the last 30 % of each song, museval convention (BSSEval "
                        "v4 images, median over 1 s frames), labkit.metrics.sdr direct backend"}
    if not args.skip_finetune:
        model = resolve_model(args.model, task="vocals")
        result["model"] = getattr(model, "pretrained", {"name": str(args.model)}).get("name")
        tracks = find_tracks(toy.ensure("full", progress=False), split="test")[:args.songs]
        rows = []
        # one process per song: each has its own CPU clock, so the budget stays per song
        # "spawn": a forked child of a process that already ran torch can deadlock in OpenMP
        with ProcessPoolExecutor(max_workers=args.jobs,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            for row in pool.map(finetune_one, tracks, [args] * len(tracks)):
                rows.append(row)
                print(json.dumps(row), flush=True)
        improvements = [r["improvement_db"] for r in rows]
        result["songs"] = rows
        result["median"] = {key: round(float(np.median([r[key] for r in rows])), 2) for key in
                            ("shipped_db", "finetuned_db", "oracle_db", "improvement_db",
                             "finetune_wall_s", "finetune_cpu_s", "steps")}
        result["criterion"] = {"median_improvement_db": round(float(np.median(improvements)), 2),
                               "required_db": 1.0,
                               "met": bool(np.median(improvements) >= 1.0)}
    if not args.skip_separate:
        result["separate"] = time_separate(args)
        print(json.dumps(result["separate"]), flush=True)
    result["machine"]["load_average_end"] = load_average()
    parts = {"finetune": ("songs", "median", "criterion", "model", "settings_finetune",
                          "machine_finetune"),
             "separate": ("separate", "settings_separate", "machine_separate")}
    earlier = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for part, keys in parts.items():
        if getattr(args, f"skip_{part}"):  # a part not run now keeps its earlier numbers
            result.update({k: earlier[k] for k in keys if k in earlier})
        else:
            result[f"settings_{part}"] = result["settings"]
            result[f"machine_{part}"] = result["machine"]
    del result["settings"], result["machine"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(report(result))
    return 0


def report(result: dict) -> str:
    """A markdown table of the fine-tuning rows and the separation timing."""
    lines = []
    if "songs" in result:
        header = ("| song | shipped (dB) | fine-tuned (dB) | IRM2 oracle (dB) | gain (dB) | steps "
                  "| wall (s) | CPU (s) |")
        lines += [header, "|---|---|---|---|---|---|---|---|"]
        for r in result["songs"] + [{"song": "**median**", **result["median"]}]:
            lines.append(f"| {r['song']} | {r['shipped_db']:.2f} | {r['finetuned_db']:.2f} | "
                         f"{r['oracle_db']:.2f} | {r['improvement_db']:+.2f} | {r['steps']:.0f} "
                         f"| {r['finetune_wall_s']:.0f} | {r['finetune_cpu_s']:.0f} |")
    if "separate" in result and "wall_s" in result["separate"]:
        s = result["separate"]
        line = (f"`{s['command']}` on a {s['mp3_seconds']:.0f} s MP3: {s['wall_s']} s wall, "
                f"{s['cpu_s']} s CPU, peak memory {s['peak_rss_mb']} MB")
        lines += ["", line]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
