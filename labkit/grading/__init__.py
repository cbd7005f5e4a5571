"""Exercises: generate them from the solved notebooks, check answers, grade whole notebooks.

- Check modules ``labkit/grading/checks_NN.py`` declare one check per exercise with
  :func:`exercise` and :func:`expect` (see :mod:`labkit.grading.registry`).
- :func:`check` gives feedback inside a notebook: ``labkit.check("01.2")``.
- :func:`grade_notebook` (``labkit grade PATH``) grades a notebook offline, each exercise in its
  own process with a time limit.
- :func:`make_exercises` (``labkit make-exercises``) writes ``exercises/`` from ``solutions/``.
"""
from __future__ import annotations

from labkit.grading.evaluate import Outcome, run_check
from labkit.grading.feedback import check
from labkit.grading.generate import MarkerError, generate_notebook, make_exercises
from labkit.grading.registry import (
    Exercise,
    ExerciseFailure,
    Registry,
    UnknownExerciseError,
    default_registry,
    exercise,
    expect,
)
from labkit.grading.runner import Result, format_report, grade_notebook

__all__ = [
    "Exercise", "ExerciseFailure", "MarkerError", "Outcome", "Registry", "Result",
    "UnknownExerciseError", "check", "default_registry", "exercise", "expect", "format_report",
    "generate_notebook", "grade_notebook", "make_exercises", "run_check",
]
