"""The ``labkit`` command line (also ``python -m labkit``).

Each subcommand is one function that adds its parser and sets ``func`` to the function that runs
it, listed in :data:`SUBCOMMANDS`. To add a command, write ``add_<name>(subparsers)`` and a
``run_<name>(args) -> int`` and append ``add_<name>`` to the list. A :class:`LabkitError` from any
command prints one line, ``labkit: error: ...``, and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from labkit.atoms.runs import add_fit_atoms
from labkit.errors import LabkitError
from labkit.report import add_report


def _default_dir(name: str) -> Path:
    """``name`` in the labkit checkout when there is one, else in the current folder."""
    from labkit.core import repo_root

    root = repo_root()
    return (root if root is not None else Path.cwd()) / name


# --- labkit make-exercises -------------------------------------------------------------------

def add_make_exercises(subparsers: argparse._SubParsersAction) -> None:
    """``labkit make-exercises [--solutions DIR] [--exercises DIR] [--check]``."""
    p = subparsers.add_parser(
        "make-exercises", help="generate exercises/ from solutions/ by the solution markers",
        description="Write exercises/NN_*.ipynb from solutions/NN_*.ipynb, replacing each "
                    "# BEGIN SOLUTION ... # END SOLUTION block with a stub that raises "
                    "NotImplementedError.")
    p.add_argument("--solutions", type=Path, default=None,
                   help="folder of solved notebooks (default: the checkout's solutions/)")
    p.add_argument("--exercises", type=Path, default=None,
                   help="folder to write exercise notebooks to (default: the checkout's "
                        "exercises/)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the exercise notebooks that differ from "
                        "what generation produces")
    p.set_defaults(func=run_make_exercises)


def run_make_exercises(args: argparse.Namespace) -> int:
    """Regenerate (or with --check, compare) the exercise notebooks."""
    from labkit.grading.generate import make_exercises, orphan_exercises

    solutions = args.solutions or _default_dir("solutions")
    exercises = args.exercises or _default_dir("exercises")
    differ = make_exercises(solutions, exercises, check=args.check)
    if args.check:
        if differ:
            print(f"{len(differ)} exercise notebook(s) differ from what generation produces "
                  f"(run `labkit make-exercises`):")
            for path in differ:
                print(f"  {path}")
            return 1
        print(f"exercises in {exercises} are up to date with {solutions}")
        return 0
    for path in differ:
        print(f"wrote {path}")
    if not differ:
        print(f"exercises in {exercises} were already up to date")
    for path in orphan_exercises(solutions, exercises):
        print(f"note: {path} has no solution notebook in {solutions}", file=sys.stderr)
    return 0


# --- labkit grade ----------------------------------------------------------------------------

def add_grade(subparsers: argparse._SubParsersAction) -> None:
    """``labkit grade PATH [--timeout SECONDS] [--json] [--jobs N] [--checks FILE]``."""
    p = subparsers.add_parser(
        "grade", help="grade a student notebook, each exercise in its own process",
        description="Run every exercise check registered for the notebook (its number comes "
                    "from the file name, e.g. 01_stft_basics.ipynb) in a fresh Python process "
                    "with a time limit, and print a per-exercise report. Exit status 0 when "
                    "every exercise passes, 1 otherwise, 2 when the notebook cannot be read.")
    p.add_argument("path", type=Path, help="the notebook to grade (.ipynb)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="time limit per exercise (default: each check's own, usually 60 s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="exercises graded at once (default: number of CPU cores, at most 4)")
    p.add_argument("--checks", type=Path, action="append", default=None, metavar="FILE",
                   help="grade with the checks in this Python file instead of labkit's own "
                        "(repeatable; for writing new checks)")
    p.set_defaults(func=run_grade)


def run_grade(args: argparse.Namespace) -> int:
    """Grade one notebook and print the report; 0 if every exercise passed, else 1."""
    from labkit.grading.registry import Registry
    from labkit.grading.runner import format_report, grade_notebook, report_json

    if args.jobs is not None and args.jobs < 1:
        raise LabkitError(f"--jobs {args.jobs}: give at least 1")
    registry = Registry.from_files(args.checks) if args.checks else None
    results = grade_notebook(args.path, timeout=args.timeout, registry=registry, jobs=args.jobs)
    print(report_json(results, args.path) if args.json else format_report(results, args.path))
    return 0 if all(r.passed for r in results) else 1


# --- labkit train <model> ---------------------------------------------------------------------

# Training commands: name -> (module, function(argv) -> exit status, help). Each module parses its
# own options, so that `labkit --help` stays fast (no torch import) and a model's options live
# beside its training code.
TRAIN_COMMANDS: dict[str, tuple[str, str, str]] = {
    "specunet": ("labkit.vocals", "cli_main",
                 "notebook 02: the spectrogram U-Net for vocals (masked L1 on STFT magnitudes)"),
    "pretrained": ("labkit.pretrained", "cli_main",
                   "rebuild a shipped model of data/models (fixed recipe, updates the manifest)"),
    "waveunet": ("labkit.stems", "train_cli",
                 "notebook 03: the waveform U-Net for vocals, drums, bass and other"),
    "superres": ("labkit.superres", "cli_train_main",
                 "notebook 05: diffusion audio super-resolution (11.025 -> 44.1 kHz)"),
}


def add_train(subparsers: argparse._SubParsersAction) -> None:
    """``labkit train MODEL [options]`` (``labkit train MODEL --help`` lists the options)."""
    p = subparsers.add_parser(
        "train", help="train one of the course's models",
        description="Train a model of the course from the command line; "
                    "`labkit train MODEL --help` lists its options.")
    models = p.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name, (_, _, help_text) in TRAIN_COMMANDS.items():
        # No option prefix of its own: every argument, "--help" included, goes to the model.
        q = models.add_parser(name, help=help_text, add_help=False, prefix_chars="\x00")
        q.add_argument("options", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Hand the options to the chosen model's training command."""
    import importlib

    module, function, _ = TRAIN_COMMANDS[args.model]
    return getattr(importlib.import_module(module), function)(args.options)


# --- labkit finetune ----------------------------------------------------------------------------

def add_finetune(subparsers: argparse._SubParsersAction) -> None:
    """``labkit finetune SONG --vocals V.wav [...]`` (options in :mod:`labkit.finetune`)."""
    from labkit.finetune import add_cli_arguments

    p = subparsers.add_parser(
        "finetune", help="fine-tune a separator on one song, then separate all of it",
        description="Fine-tune a shipped separator (or a checkpoint) on the first part of SONG "
                    "with the stems you have, score it on the held-out rest beside the shipped "
                    "model and the oracle, and write <out>/<name>_separated/<name>_<stem>.wav. "
                    "Without stems there is nothing to fine-tune on: the shipped model separates "
                    "the song as it is.")
    add_cli_arguments(p)
    p.set_defaults(func=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    """Fine-tune on one song and separate it (see :func:`labkit.finetune.cli_main`)."""
    from labkit.finetune import cli_main

    return cli_main(args)


# --- labkit separate FILE --------------------------------------------------------------------

def add_separate(subparsers: argparse._SubParsersAction) -> None:
    """``labkit separate FILE [--model CKPT] [--out DIR]`` (options in :mod:`labkit.stems`)."""
    p = subparsers.add_parser(
        "separate", help="separate an audio file into stems with a trained model",
        add_help=False, prefix_chars="\x00",
        description="`labkit separate --help` lists the options.")
    p.add_argument("options", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_separate)


def run_separate(args: argparse.Namespace) -> int:
    """Separate a file (see :func:`labkit.stems.separate_cli`)."""
    from labkit.stems import separate_cli

    return separate_cli(args.options)


# --- labkit upsample IN --model CKPT --out OUT -----------------------------------------------

def add_upsample(subparsers: argparse._SubParsersAction) -> None:
    """``labkit upsample IN --model CKPT --out OUT [...]`` (options in :mod:`labkit.superres`)."""
    p = subparsers.add_parser(
        "upsample", help="restore the high band of band-limited audio (diffusion model)",
        add_help=False, prefix_chars="\x00",
        description="`labkit upsample --help` lists the options.")
    p.add_argument("options", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_upsample)


def run_upsample(args: argparse.Namespace) -> int:
    """Upsample a file (see :func:`labkit.superres.cli_upsample_main`)."""
    from labkit.superres import cli_upsample_main

    return cli_upsample_main(args.options)


# Subcommand registration functions, in the order `labkit --help` lists them.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_grade,
    add_make_exercises,
    add_train,
    add_finetune,
    add_separate,
    add_upsample,
    add_fit_atoms,
    add_report,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``labkit`` argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    from labkit import __version__

    parser = argparse.ArgumentParser(
        prog="labkit", description="Tools for the labkit deep-learning-for-audio course.")
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``labkit`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LabkitError as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
