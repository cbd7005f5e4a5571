"""Feedback inside a notebook: ``labkit.check("01.2")`` runs one exercise's check right away."""
from __future__ import annotations

import sys

from labkit.errors import LabkitError
from labkit.grading.evaluate import run_check
from labkit.grading.registry import Registry, default_registry


def _caller_globals() -> dict:
    """The globals of the first frame outside labkit: the notebook (or script) that called check."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name != "labkit" and not name.startswith("labkit."):
            return frame.f_globals
        frame = frame.f_back
    return {}


def check(exercise_id: str, *objects: object, registry: Registry | None = None,
          **named: object) -> bool:
    """Check the answer to exercise ``exercise_id`` now, print the feedback, return True if right.

    Pass the function(s) positionally or by name, or pass none to use the functions of that name
    defined in the calling notebook: ``labkit.check("01.1")``. Prints
    ``Exercise 01.1 passed ✓`` or ``Exercise 01.1: <what was wrong>``; a wrong answer never
    raises. An unknown id raises a LabkitError listing the known ones; ``registry`` defaults to
    the course's checks.
    """
    registry = default_registry() if registry is None else registry
    ex = registry.get(exercise_id)
    names = ex.functions
    if len(objects) > len(names):
        raise LabkitError(
            f"exercise {exercise_id} checks {len(names)} function(s) ({ex.function_label}), "
            f"but {len(objects)} were passed")
    given = dict(zip(names, objects))
    for name, value in named.items():
        if name not in names:
            raise LabkitError(f"exercise {exercise_id} checks {ex.function_label}; "
                              f"there is no function {name!r} to pass")
        if name in given:
            raise LabkitError(f"exercise {exercise_id}: {name} was passed twice")
        given[name] = value
    missing = [name for name in names if name not in given]
    if missing:
        caller = _caller_globals()
        for name in missing:
            if name not in caller:
                print(f"Exercise {exercise_id}: {name} is not defined yet; run the cell that "
                      "defines it first")
                return False
            given[name] = caller[name]
    for name in names:
        if not callable(given[name]):
            print(f"Exercise {exercise_id}: {name} should be the function itself, got a "
                  f"{type(given[name]).__name__} (pass it without calling it)")
            return False
    outcome = run_check(ex, [given[name] for name in names])
    print(f"{outcome.message} ✓" if outcome.passed else outcome.message)
    return outcome.passed
