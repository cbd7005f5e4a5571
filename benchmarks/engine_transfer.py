"""How far notebook 02's spectrogram U-Net transfers to synthesiser engines it never heard.

Run (full mode: 60 tracks to generate on first use, about 1.5 minutes; 10 minutes of training;
evaluation of both test splits, about 4 minutes; about 16 minutes in all on 2 idle CPU cores,
more on busy ones)::

    .venv/bin/python benchmarks/engine_transfer.py --minutes 10

Every stem of the built-in toy-MUSDB set draws one of several sound engines per track
(:data:`labkit.data.toy.ENGINES`). The U-Net trains on tracks rendered with some of them only
(:data:`TRAIN_ENGINES`: vocals klatt/choir/rap, drums acoustic/electronic/lofi, bass
sine/finger/saw, other pad/piano/guitar/organ) and is tested twice:

- **same engines**: unseen tracks rendered with the training engines;
- **other engines**: the same tracks (same seeds, so the same tempo, key, chords, melody and bass
  line) rendered with every *other* engine of each stem (:func:`complementary_engines`).

Data: two :func:`labkit.data.toy.generate` calls with the same seed. Set A holds the training
split (``--n-train`` songs; every 5th is the validation split) and the same-engine test split;
set B holds only the other-engine test split (``n_train=0``: nothing is rendered twice).
Tracks are 20 s at 44.1 kHz stereo, read as 22.05 kHz mono, as in ``benchmarks/spec_unet.py``.

Model and training: :data:`labkit.vocals.RECIPE` through :func:`labkit.vocals.train_spec_unet`
(1024/256 STFT patches of 128 frames, batch 8, Adam 1e-3, masked L1) for ``--minutes``, keeping
the weights of the lowest validation loss. Evaluation: :func:`labkit.vocals.evaluate_vocals` on
whole test tracks, vocals and accompaniment SDR in the museval convention (BSSEval v4, median
over 1 s frames, then over tracks) and SI-SDR, beside the IRM2 oracle (same STFT) and the
do-nothing baseline of each split.

The transfer gap per source (:func:`transfer_summary`): model SDR on the same engines minus on the
other engines, in dB, also paired per track (median over tracks of the per-track difference);
and as a share of each split's oracle (model SDR / oracle SDR on that split), because the other
engines may be easier or harder to separate in themselves (the oracle's gap says by how much).

Writes ``benchmarks/results/engine_transfer.json`` and prints the tables. ``--fast`` is a smoke
test (the fast preset's sizes, 4 s of audio per test track, seconds of training).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from labkit.data import toy  # after the path line, so that the repo's labkit is used

RESULT = HERE / "results" / "engine_transfer.json"
SR = 22050
MODEL = "Spec U-Net"
ORACLE = "IRM2 oracle"
FLOOR = "do-nothing"
SOURCES = ("vocals", "accompaniment")
CONDITIONS = ("same engines", "other engines")

TRAIN_ENGINES: dict[str, list[str]] = {
    "vocals": ["klatt", "choir", "rap"],
    "drums": ["acoustic", "electronic", "lofi"],
    "bass": ["sine", "finger", "saw"],
    "other": ["pad", "piano", "guitar", "organ"],
}
"""The engines the model trains on (the issue's split; every name is in ``toy.ENGINES``)."""

SIZES = {
    "full": {"n_train": 40, "n_test": 10, "seconds": 20.0},
    "fast": {"n_train": 6, "n_test": 3, "seconds": 8.0},
}
"""Data set sizes: "full" matches ``toy.PRESETS["full"]`` (32 train + 8 valid songs, 10 test)."""


# ------------------------------------------------------------------------------------ helpers
def complementary_engines(train: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """For each stem of ``train`` (``{stem: [engine, ...]}``), every engine of
    ``toy.ENGINES[stem]`` that ``train`` leaves out, in ``toy.ENGINES`` order.

    Raises :class:`labkit.errors.DataError` for an unknown stem or engine (via
    :func:`toy.check_engines`) and ValueError when a stem's training engines already cover all of
    its engines (nothing unseen would be left to test on).
    """
    checked = toy.check_engines(train) or {}
    out = {}
    for stem, names in checked.items():
        rest = [e for e in toy.ENGINES[stem] if e not in names]
        if not rest:
            raise ValueError(f"train engines for {stem!r} ({', '.join(names)}) cover all of "
                             f"toy.ENGINES[{stem!r}]: leave at least one out to test transfer")
        out[stem] = rest
    return out


def _median(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _fraction(value: float, reference: float) -> float | None:
    """``value / reference``, or None where that share means nothing (reference <= 0 dB)."""
    ok = math.isfinite(value) and math.isfinite(reference) and reference > 0
    return value / reference if ok else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def transfer_summary(same: Mapping[str, Mapping[str, Any]], other: Mapping[str, Mapping[str, Any]],
                     model: str = MODEL, oracle: str = ORACLE,
                     sources: Sequence[str] = SOURCES) -> dict[str, dict[str, float | None]]:
    """The transfer gap of ``model`` between two test conditions, per source.

    ``same`` and ``other``: ``{method: evaluate_tracks result}`` (each with ``median``
    ``{source: dB}`` and ``per_track`` ``{track: {source: dB}}``) on the same-engine and the
    other-engine test split. Returns per source: the model's and the oracle's medians on both,
    ``gap_db`` (model same - other), ``oracle_gap_db``, ``paired_gap_db`` (median over the tracks
    present in both of the per-track difference; None without common tracks),
    ``fraction_of_oracle_same`` / ``_other`` (model / oracle on that split; None where the
    oracle is <= 0 dB) and ``fraction_gap`` (same - other).
    """
    out: dict[str, dict[str, float | None]] = {}
    for source in sources:
        model_same = float(same[model]["median"][source])
        model_other = float(other[model]["median"][source])
        oracle_same = float(same[oracle]["median"][source])
        oracle_other = float(other[oracle]["median"][source])
        same_tracks, other_tracks = same[model]["per_track"], other[model]["per_track"]
        paired = [float(same_tracks[t][source]) - float(other_tracks[t][source])
                  for t in same_tracks if t in other_tracks]
        fraction_same = _fraction(model_same, oracle_same)
        fraction_other = _fraction(model_other, oracle_other)
        out[source] = {
            "model_same": _round(model_same), "model_other": _round(model_other),
            "oracle_same": _round(oracle_same), "oracle_other": _round(oracle_other),
            "gap_db": _round(model_same - model_other),
            "oracle_gap_db": _round(oracle_same - oracle_other),
            "paired_gap_db": _round(_median(paired)),
            "fraction_of_oracle_same": _round(fraction_same),
            "fraction_of_oracle_other": _round(fraction_other),
            "fraction_gap": (_round(fraction_same - fraction_other)
                             if fraction_same is not None and fraction_other is not None
                             else None),
        }
    return out


def by_vocal_engine(result: Mapping[str, Any], engines: Mapping[str, str]) -> dict[str, Any]:
    """Median vocals score per vocal engine: ``result`` is one evaluate_tracks result,
    ``engines`` maps track name -> its vocal engine (from the data set's manifest)."""
    groups: dict[str, list[float]] = {}
    for track, scores in result["per_track"].items():
        groups.setdefault(engines.get(track, "?"), []).append(float(scores["vocals"]))
    return {engine: {"tracks": len(v), "vocals": _round(_median(v))}
            for engine, v in sorted(groups.items())}


def _vocal_engines(root: Path) -> dict[str, str]:
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    return {name: track["engines"]["vocals"][0] for name, track in manifest["tracks"].items()}


def transfer_table(summary: Mapping[str, Mapping[str, float | None]],
                   sources: Sequence[str] = SOURCES) -> str:
    """A markdown table of :func:`transfer_summary` (rows: quantities, columns: sources)."""
    rows = (("model SDR, same engines (dB)", "model_same"),
            ("model SDR, other engines (dB)", "model_other"),
            ("oracle SDR, same engines (dB)", "oracle_same"),
            ("oracle SDR, other engines (dB)", "oracle_other"),
            ("transfer gap, same - other (dB)", "gap_db"),
            ("  paired per track, median (dB)", "paired_gap_db"),
            ("oracle gap, same - other (dB)", "oracle_gap_db"),
            ("model / oracle, same engines", "fraction_of_oracle_same"),
            ("model / oracle, other engines", "fraction_of_oracle_other"),
            ("share-of-oracle gap (same - other)", "fraction_gap"))
    lines = ["| | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    for title, key in rows:
        cells = ["–" if summary[s][key] is None else f"{summary[s][key]:.2f}" for s in sources]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def generate_sets(sizes: Mapping[str, Any], seed: int, data_root: Path | None,
                  progress: bool) -> tuple[Path, Path, dict[str, list[str]]]:
    """Set A (train + same-engine test) and set B (other-engine test only); returns both roots
    and the test engines of B. ``data_root=None`` caches them under ``toy.default_root()``."""
    other_engines = complementary_engines(TRAIN_ENGINES)
    common = {"seconds": sizes["seconds"], "sample_rate": 44100, "stereo": True, "seed": seed,
              "progress": progress}
    root_same = toy.generate(None if data_root is None else data_root / "same-engines",
                             n_train=sizes["n_train"], n_test=sizes["n_test"],
                             engines=TRAIN_ENGINES, **common)
    # n_train=0: B's own training split would never be read. With the same seed its test track
    # i has A's test track i's seed, hence the same score; only the engines differ.
    root_other = toy.generate(None if data_root is None else data_root / "other-engines",
                              n_train=0, n_test=sizes["n_test"], engines=TRAIN_ENGINES,
                              test_engines=other_engines, **common)
    return Path(root_same), Path(root_other), other_engines


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=None,
                        help="training budget in minutes (default 10; 0.25 with --fast)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="what --minutes measures: wall time (default) or this process's "
                             "CPU time per thread (emulates an idle machine on a shared one)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training + validation songs (default 40: 32 + 8, as the full preset)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="test tracks per condition (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    parser.add_argument("--fast", action="store_true",
                        help="smoke test: fast-preset sizes, 4 s of audio, seconds of training")
    parser.add_argument("--out", type=Path, default=RESULT, help=f"JSON path (default {RESULT})")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="run folder for checkpoints (default: a temporary folder)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder for the two data sets (default: labkit's data cache)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from labkit.core import device as default_device
    from labkit.data import find_tracks
    from labkit.oracles import report_data
    from labkit.vocals import (
        RECIPE,
        evaluate_vocals,
        evaluation_tracks,
        load_stems,
        train_spec_unet,
        vocals_report,
    )

    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    preset = "fast" if args.fast else "full"
    sizes = dict(SIZES[preset])
    for key, value in (("n_train", args.n_train), ("n_test", args.n_test)):
        if value is not None:
            sizes[key] = value
    minutes = args.minutes if args.minutes is not None else (0.25 if args.fast else 10.0)
    device = default_device()
    load_start = os.getloadavg()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-engine-transfer-"))
    print(f"toy.ENGINES: {toy.ENGINES}", flush=True)

    start = time.perf_counter()
    root_same, root_other, other_engines = generate_sets(sizes, args.seed, args.data_root,
                                                         progress)
    generate_seconds = time.perf_counter() - start
    print(f"train engines: {TRAIN_ENGINES}\nother engines: {other_engines}", flush=True)
    train_songs = load_stems(find_tracks(root_same, split="train"))
    valid_songs = load_stems(find_tracks(root_same, split="valid"))
    test_seconds = 4.0 if args.fast else None
    tests = {"same engines": evaluation_tracks(find_tracks(root_same, split="test"),
                                               seconds=test_seconds),
             "other engines": evaluation_tracks(find_tracks(root_other, split="test"),
                                                seconds=test_seconds)}
    print(f"data: {len(train_songs)} train / {len(valid_songs)} valid songs, "
          f"{len(tests['same engines'])} + {len(tests['other engines'])} test tracks ({preset}), "
          f"{args.threads} threads, device {device}, load average {load_start}", flush=True)

    cpu_start = time.process_time()
    unet = train_spec_unet(workdir / "spec_unet", model_config=dict(RECIPE),
                           train_songs=train_songs, valid_songs=valid_songs, minutes=minutes,
                           device=device, overwrite=True, progress=progress, tensorboard=False,
                           clock=args.clock)
    train_cpu = time.process_time() - cpu_start
    print(f"{MODEL}: {unet.steps} steps in {unet.seconds:.0f} s ({unet.stopped_by})", flush=True)

    results, evaluation_seconds = {}, {}
    for condition, tracks in tests.items():
        start = time.perf_counter()
        results[condition] = evaluate_vocals({MODEL: unet.separator}, tracks,
                                             metrics=("sdr", "si_sdr"), progress=progress)
        evaluation_seconds[condition] = round(time.perf_counter() - start, 1)
        print(f"\n## {condition}\n\n{vocals_report(results[condition])}", flush=True)

    transfer = {metric: transfer_summary(results["same engines"][metric],
                                         results["other engines"][metric])
                for metric in ("sdr", "si_sdr")}
    print("\n## transfer (SDR, museval v4: median over 1 s frames, then over tracks)\n")
    print(transfer_table(transfer["sdr"]))

    engines_of = {"same engines": _vocal_engines(root_same),
                  "other engines": _vocal_engines(root_other)}
    conditions = {}
    for condition in CONDITIONS:
        by_metric = results[condition]
        conditions[condition] = {
            "root": str(root_same if condition == "same engines" else root_other),
            "test_engines": TRAIN_ENGINES if condition == "same engines" else other_engines,
            "tables": {metric: report_data(by_method, sources=SOURCES, metric_name=metric,
                                           reference=ORACLE, floor=FLOOR)
                       for metric, by_method in by_metric.items()},
            "per_track": {metric: {name: result["per_track"] for name, result in
                                   by_method.items()} for metric, by_method in by_metric.items()},
            "sdr_by_vocal_engine": {name: by_vocal_engine(by_metric["sdr"][name],
                                                          engines_of[condition])
                                    for name in (MODEL, ORACLE)},
            "evaluation_seconds": evaluation_seconds[condition],
        }
    load_end = os.getloadavg()
    first = tests["same engines"][0][1]
    out = {
        "benchmark": "engine transfer of notebook 02's spectrogram U-Net: trained on some "
                     "toy-MUSDB synthesiser engines, tested on the same and on the other engines",
        "command": "python benchmarks/engine_transfer.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "minutes": minutes,
        "budget_clock": "wall time" if args.clock == "wall" else "process CPU time / threads",
        "data": {"preset_sizes": preset, **sizes, "seed": args.seed,
                 "generated_at": "44.1 kHz stereo", "evaluated_at": f"{SR} Hz mono",
                 "train_songs": len(train_songs), "valid_songs": len(valid_songs),
                 "test_tracks": {c: len(t) for c, t in tests.items()},
                 "test_seconds_each": round(first.shape[-1] / SR, 2),
                 "train_engines": TRAIN_ENGINES, "other_engines": other_engines,
                 "pairing": "test track i of both conditions has the same seed, so the same "
                            "score (tempo, key, chords, melody, bass line); only the engines "
                            "differ",
                 "generation_seconds": round(generate_seconds, 1)},
        "metrics": {"sdr": "SDR, museval v4 (MUSDB convention): median over 1 s frames, "
                           "then median over tracks, dB",
                    "si_sdr": "SI-SDR, whole signal, median over tracks, dB",
                    "oracle": f"{ORACLE}: |V|^2 / (|V|^2 + |A|^2) with the U-Net's STFT, "
                              f"1024/256 at {SR} Hz"},
        "model": {"name": MODEL, "config": dict(RECIPE),
                  "parameters": sum(p.numel() for p in unet.model.parameters()),
                  "train_seconds": round(unet.seconds, 1),
                  "train_cpu_seconds": round(train_cpu, 1), "train_steps": unet.steps,
                  "steps_per_second": round(unet.steps_per_second, 3),
                  "stopped_by": unet.stopped_by,
                  "settings": {"n_fft": 1024, "hop_length": 256, "patch_frames": 128,
                               "batch_size": 8, "lr": 1e-3, "loss": "masked L1 on magnitudes",
                               "separation": "128-frame chunks, 50 % overlap, mixture phase"}},
        "transfer": transfer,
        "conditions": conditions,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "device": str(device), "cpu_count": os.cpu_count(),
                    "threads": args.threads,
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in load_end],
                    "note": "a load average above the core count means fewer training steps "
                            "in the budget than on a quiet machine: absolute SDRs are then "
                            "pessimistic, the same-vs-other comparison is not affected"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
