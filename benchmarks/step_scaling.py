"""How separation quality grows with training steps, far beyond notebooks 02 and 03's CPU budgets.

Issues 4 and 5 ask for a vocals SDR of 0.6 x the IRM2 oracle's after 10 minutes of training on
2 CPU cores (notebook 02), and a mean 4-stem SDR of 0.5 x the oracle's after 15 minutes
(notebook 03). On this machine's 2 cores those budgets buy about 3200 training steps
(``benchmarks/results/spec_unet.json``, ``wave_unet.json``). This benchmark trains the same
models for many more steps, on a GPU where there is one, and scores each at fixed step counts
along its run: where does each model's curve go, and how many steps would a bar need?

Run (on a GPU; about 8 minutes on one H100 with 5 jobs side by side)::

    python benchmarks/step_scaling.py --steps 2000,4000,8000,16000 --jobs 5

Jobs (``--only`` picks some; each is one training run, scored at every ``--steps`` value it
reaches within ``--minutes``, and at its last step):

- ``spec-recipe``: notebook 02's :data:`labkit.vocals.RECIPE` (4 levels, 16 -> 128 channels);
- ``spec-practical``: the practical's width (32 -> 256) with the recipe's batch norm and log input;
- ``spec-paper``: Jansson et al.'s 6 levels, 16 -> 512, dropout 0.5;
- ``spec-practical-160``: the practical's width on 160 training songs instead of 32 (a larger
  toy-MUSDB set whose first 40 training and all 10 test tracks are the built-in set's), to see
  whether a plateau comes from the data;
- ``wave-recipe``: notebook 03's :data:`labkit.stems.RECIPE` (64 -> 324 channels);
- ``wave-wide``: the same at twice the width (128 -> 648).

Training is the library's own (:func:`labkit.vocals.train_spec_unet`,
:func:`labkit.stems.train_waveunet`: the Trainer, mixed precision on CUDA), with each recipe's
batch size and learning rate. The spectrogram U-Nets train at a constant rate (their recipe);
the waveform U-Nets lower theirs along one cosine over the run (their recipe anneals over its
budget), which ends at the largest ``--steps`` value or at the ``--minutes`` cap, whichever is
spent first; so an intermediate score is not that of a run annealed to that step. Scores use the live weights at each step (not the best validation checkpoint).

Scoring: every test track of the built-in set, separated by :func:`labkit.separate.separate`
as the notebooks do; SDR in the museval convention (BSSEval v4, median over 1 s frames, then over
tracks; :func:`labkit.metrics.sdr` with the ``direct`` backend, which gives museval's numbers),
beside the IRM2 oracle of each notebook (vocals: 1024/256 STFT at 22.05 kHz mono; stems: 4096/1024
at 44.1 kHz stereo).

Writes ``benchmarks/results/step_scaling.json`` and prints a table. ``--fast`` is a smoke test
(tiny data and models, a few steps, on the CPU).
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
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "step_scaling.json"

JOBS: dict[str, dict[str, Any]] = {
    "spec-recipe": {"part": "spec", "model": {}},
    "spec-practical": {"part": "spec", "model": {"base_channels": 32}},
    "spec-paper": {"part": "spec", "model": {"levels": 6, "base_channels": 16, "dropout": 0.5}},
    "spec-practical-160": {"part": "spec", "model": {"base_channels": 32}, "songs": 160},
    "wave-recipe": {"part": "wave", "model": {}},
    "wave-wide": {"part": "wave", "model": {"width": 128}},
}
TARGETS = {"spec": 0.6, "wave": 0.5}
"""The issues' quality targets as shares of the oracle (after 10 / 15 CPU minutes)."""
FAST_SPEC = {"levels": 2, "base_channels": 4, "kernel_size": 3}
FAST_WAVE = {"filter_length": 64, "stride": 32, "n_filters": 64, "depth": 2, "width": 8}


# ----------------------------------------------------------------------------------- data
def data_roots(fast: bool, songs: int | None, workers: int) -> tuple[Path, Path]:
    """``(built-in set, training set)``: the same folder unless ``songs`` asks for more
    training songs than the built-in set has (then a larger set with the same seed)."""
    from labkit.data import toy

    preset = dict(toy.PRESETS["fast" if fast else "full"])
    root = toy.generate(**preset, workers=workers, progress=False)
    if songs is None:
        return root, root
    if fast:
        songs = min(songs, 8)
    # every 5th training track is held out for validation: n_train = songs * 5 / 4
    bigger = {**preset, "n_train": -(-songs * 5 // 4)}
    return root, toy.generate(**bigger, workers=workers, progress=False)


# ------------------------------------------------------------------------------- scoring
class Scorer:
    """Scores a model on the test tracks as the notebook does (:func:`labkit.vocals.evaluate_vocals`
    or :func:`labkit.stems.evaluate_stems`, SDR with the direct backend); ``oracle`` holds the
    IRM2 oracle's medians."""

    def __init__(self, part: str, root: Path) -> None:
        self.part = part
        if part == "spec":
            from labkit.data import find_tracks
            from labkit.vocals import evaluation_tracks

            self.tracks = evaluation_tracks(find_tracks(root, split="test"))
        else:
            from labkit import stems

            self.tracks = stems.evaluation_tracks(root, split="test")
        self.oracle = self._medians({}, oracle=True)["IRM2 oracle"]

    def _medians(self, estimators: dict[str, Any], oracle: bool = False
                 ) -> dict[str, dict[str, float]]:
        """Median SDR per source of each estimator (and of the oracle, if asked)."""
        if self.part == "spec":
            from labkit.vocals import evaluate_vocals

            results = evaluate_vocals(estimators, self.tracks, metrics=("sdr",), oracle=oracle,
                                      do_nothing=False, progress=False, backend="direct")["sdr"]
        else:
            from labkit.stems import evaluate_stems

            results = evaluate_stems(estimators, self.tracks, oracle=oracle, do_nothing=False,
                                     progress=False)
        return {name: dict(result["median"]) for name, result in results.items()}

    def __call__(self, separator: torch.nn.Module) -> dict[str, float]:
        return self._medians({"model": separator})["model"]


def headline(part: str, medians: dict[str, float]) -> float:
    """Vocals SDR (notebook 02) or the mean over the four stems (notebook 03)."""
    from labkit.stems import mean_sdr

    return medians["vocals"] if part == "spec" else mean_sdr({"median": medians})


# ---------------------------------------------------------------------------------- one job
def run_job(name: str, steps: list[int], minutes: float, fast: bool, workdir: Path,
            workers: int) -> dict[str, Any]:
    """Train job ``name`` once, scoring it at each of ``steps``; returns its record."""
    job = JOBS[name]
    part = job["part"]
    base, train_root = data_roots(fast, job.get("songs"), workers)
    scorer = Scorer(part, base)
    points: list[dict[str, Any]] = []
    start = time.perf_counter()

    def at_step(separator_of):
        def callback(trainer: Any, event: str, info: dict[str, Any]) -> None:
            wanted = (event == "log" and trainer.step in steps) or event == "end"
            if wanted and all(p["step"] != trainer.step for p in points):
                scores = scorer(separator_of(trainer.model))
                points.append({"step": trainer.step, "sdr": scores,
                               "headline": headline(part, scores),
                               "train_loss": float(np.mean(trainer.history["train_loss"][-20:])),
                               "seconds": round(time.perf_counter() - start, 1),
                               "end_of_run": event == "end"})
                print(f"{name}: step {trainer.step}: {points[-1]['headline']:.2f} dB",
                      flush=True)
        return callback

    common = {"max_steps": max(steps), "minutes": minutes, "progress": False, "seed": 0}
    if part == "spec":
        from labkit.models.spec_unet import SpecUNetSeparator
        from labkit.vocals import RECIPE, train_spec_unet

        config = {**RECIPE, **job["model"], **(FAST_SPEC if fast else {})}
        callback = at_step(lambda unet: SpecUNetSeparator.from_unet(unet))
        result = train_spec_unet(workdir, model_config=config, root=train_root,
                                 log_every=5 if not fast else 1, val_every=500,
                                 tensorboard=False, overwrite=True, callbacks=[callback],
                                 **common)
        settings = {"batch_size": result.settings["batch_size"], "lr": result.settings["lr"],
                    "schedule": "constant"}
    else:
        from labkit import stems

        config = {**stems.RECIPE, **job["model"], **(FAST_WAVE if fast else {})}
        result = stems.train_waveunet(workdir, model_config=config, root=train_root,
                                      log_every=5 if not fast else 1, val_every=500,
                                      overwrite=True, callbacks=[at_step(lambda model: model)],
                                      num_workers=min(3, workers), **common)
        settings = {k: result.settings[k] for k in ("batch_size", "lr", "min_lr_ratio")}
        settings["schedule"] = (f"cosine over {max(steps)} steps or {minutes} minutes, "
                                "whichever is spent first")
    parameters = sum(p.numel() for p in result.model.parameters())
    return {"part": part, "model": config, "parameters": parameters,
            "train_songs": result.settings["train_songs"], "settings": settings,
            "steps_trained": result.steps, "stopped_by": result.stopped_by,
            "train_seconds": round(result.seconds, 1), "oracle": scorer.oracle,
            "oracle_headline": headline(part, scorer.oracle), "points": points}


# ---------------------------------------------------------------------------------- report
def report(results: dict[str, Any]) -> str:
    """A markdown table: each job's headline SDR at every step count, and its share of the
    oracle."""
    steps = sorted({p["step"] for job in results["jobs"].values() for p in job["points"]
                    if not p.get("end_of_run")})
    lines = ["| job | parameters | train songs | oracle | "
             + " | ".join(f"{s} steps" for s in steps) + " | end of run |",
             "|---|---:|---:|---:|" + "---:|" * (len(steps) + 1)]

    def cell(point: dict[str, Any] | None, oracle: float, with_step: bool = False) -> str:
        if point is None:
            return ""
        text = f"{point['headline']:.2f} ({point['headline'] / oracle:.2f}x)"
        return f"{text} at {point['step']}" if with_step else text

    for name, job in results["jobs"].items():
        by_step = {p["step"]: p for p in job["points"] if not p.get("end_of_run")}
        last = next((p for p in job["points"] if p.get("end_of_run")), None)
        cells = [cell(by_step.get(s), job["oracle_headline"]) for s in steps]
        cells.append(cell(last, job["oracle_headline"], with_step=True))
        lines.append(f"| {name} | {job['parameters']:,} | {job['train_songs']} | "
                     f"{job['oracle_headline']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_budget_steps() -> dict[str, Any]:
    """Steps the CPU budgets reached in the notebook benchmarks (from their result files)."""
    out: dict[str, Any] = {}
    for key, file, path in (("spec", "spec_unet.json", ("methods", "Spec U-Net")),
                            ("wave", "wave_unet.json", ("training", "WaveUNet"))):
        try:
            data = json.loads((HERE / "results" / file).read_text())
            entry = data[path[0]][path[1]]
            out[key] = {"file": f"benchmarks/results/{file}", "command": data.get("command"),
                        "steps": entry.get("train_steps", entry.get("steps"))}
        except (OSError, KeyError, ValueError):
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="2000,4000,8000,16000",
                   help="step counts at which to score (comma-separated)")
    p.add_argument("--minutes", type=float, default=7.0,
                   help="wall-clock cap per job (it scores the steps it reaches)")
    p.add_argument("--only", default=None, help="comma-separated job names (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="jobs run side by side")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for data generation and loading per job (default: CPU count "
                        "/ jobs)")
    p.add_argument("--fast", action="store_true", help="smoke test: tiny data, models and steps")
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: run one job
    p.add_argument("--job-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    steps = sorted(int(s) for s in args.steps.split(","))
    workers = args.workers or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    if args.job is not None:  # a child process: one job
        torch.set_num_threads(max(1, min(2, workers)))
        with tempfile.TemporaryDirectory(prefix=f"scaling-{args.job}-") as scratch:
            record = run_job(args.job, steps, args.minutes, args.fast, Path(scratch), workers)
        args.job_out.write_text(json.dumps(record))
        return 0

    names = args.only.split(",") if args.only else list(JOBS)
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        p.error(f"unknown job(s) {', '.join(unknown)}; use {', '.join(JOBS)}")
    # generate the data sets once, before the jobs start side by side
    for name in names:
        data_roots(args.fast, JOBS[name].get("songs"), os.cpu_count() or 1)
    start = time.perf_counter()
    results: dict[str, Any] = {"jobs": {}}
    with tempfile.TemporaryDirectory(prefix="scaling-") as scratch:
        pending = list(names)
        running: dict[str, subprocess.Popen] = {}
        while pending or running:
            while pending and len(running) < max(1, args.jobs):
                name = pending.pop(0)
                cmd = [sys.executable, __file__, "--job", name, "--job-out",
                       str(Path(scratch) / f"{name}.json"), "--steps", args.steps,
                       "--minutes", str(args.minutes), "--workers", str(workers)]
                running[name] = subprocess.Popen(cmd + (["--fast"] if args.fast else []))
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    if proc.returncode != 0:
                        print(f"job {name} failed (exit status {proc.returncode})",
                              file=sys.stderr)
                        return 1
                    results["jobs"][name] = json.loads((Path(scratch) / f"{name}.json")
                                                       .read_text())
            time.sleep(1.0)
    results["jobs"] = {n: results["jobs"][n] for n in names}
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"CPU ({os.cpu_count()} cores)")
    results = {
        "benchmark": "separation quality against training steps (notebooks 02 and 03 models)",
        "command": "python benchmarks/step_scaling.py " + " ".join(argv or sys.argv[1:]),
        "device": device, "torch": torch.__version__, "python": platform.python_version(),
        "jobs_side_by_side": args.jobs, "minutes_cap_per_job": args.minutes,
        "metric": "SDR, museval v4 convention (median over 1 s frames, then over the test "
                  "tracks), dB; headline: vocals (spec) or the mean of the four stems (wave)",
        "targets": TARGETS, "cpu_budget_steps": cpu_budget_steps(), "wall_seconds": round(time.perf_counter() - start),
        **results,
    }
    table = report(results)
    results["table"] = table
    if not args.fast:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
