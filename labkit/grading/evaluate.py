"""Run one exercise's check on the student's functions and say, in one line, how it went.

Shared by the in-notebook :func:`labkit.grading.check` and the grader's subprocess, so a student
sees the same words in both places. Every message starts with ``Exercise NN.k``.
"""
from __future__ import annotations

import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

from labkit.grading.registry import Exercise

PASS, FAIL, ERROR, TIMEOUT, MISSING = "PASS", "FAIL", "ERROR", "TIMEOUT", "MISSING"
STATUSES = (PASS, FAIL, ERROR, TIMEOUT, MISSING)
MAX_DETAIL = 300  # characters of an exception's text kept in a message
STUDENT_CELL_PREFIX = "<notebook cell"  # file name the grader compiles notebook cells under
EXERCISE_IN_TEXT = re.compile(r"^Exercise (\d{2}\.\d+)\b")


@dataclass(frozen=True)
class Outcome:
    """How one check went: a status from :data:`STATUSES` and a one-line message."""

    status: str
    message: str

    @property
    def passed(self) -> bool:
        """True when the status is PASS."""
        return self.status == PASS


def shorten(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prefixed(exercise_id: str, message: str) -> str:
    """``message`` as a report line: ``Exercise NN.k: message`` (without doubling the prefix)."""
    message = shorten(message, 2 * MAX_DETAIL)
    if message.startswith(f"Exercise {exercise_id}"):
        return message
    return f"Exercise {exercise_id}: {message}"


def _frames(err: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(err.__traceback__))


def _is_notebook_file(filename: str) -> bool:
    # The grader's cells, or a live Jupyter kernel's (ipykernel stores cells as temporary files).
    return filename.startswith(STUDENT_CELL_PREFIX) or "ipykernel_" in filename


def _where(frame: traceback.FrameSummary) -> str:
    if frame.filename.startswith(STUDENT_CELL_PREFIX):
        return f"{frame.filename.strip('<>').split(' ', 1)[1]}, line {frame.lineno}"
    if "ipykernel_" in frame.filename:
        return f"line {frame.lineno} of its cell"
    return f"{frame.filename.replace(chr(92), '/').rsplit('/', 1)[-1]}, line {frame.lineno}"


def exception_text(err: BaseException, student_files: frozenset[str] = frozenset()) -> str:
    """``Type: message``, plus where in the student's code it was raised when that is known."""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    text = shorten(text)
    mine = [f for f in _frames(err) if f.filename in student_files or _is_notebook_file(f.filename)]
    if mine:
        text += f" ({_where(mine[-1])})"
    return text


def not_done(exercise_id: str, functions: Sequence[str], err: NotImplementedError) -> Outcome:
    """The outcome for an answer that still raises a stub's NotImplementedError."""
    who = " or ".join(functions)
    detail = shorten(str(err))
    other = EXERCISE_IN_TEXT.match(detail)
    if not detail or (other and other.group(1) == exercise_id):
        text = f"{who} still raises NotImplementedError"
    elif other:
        text = (f"{who} relies on exercise {other.group(1)}, which still raises "
                "NotImplementedError")
    else:
        text = f"{who} raises NotImplementedError: {detail}"
    return Outcome(FAIL, f"Exercise {exercise_id}: not done yet ({text})")


def _student_files(functions: Sequence[object]) -> frozenset[str]:
    files = set()
    for fn in functions:
        code = getattr(getattr(fn, "__func__", fn), "__code__", None)
        if code is not None:
            files.add(code.co_filename)
    return frozenset(files)


def run_check(ex: Exercise, functions: Sequence[object]) -> Outcome:
    """Run ``ex``'s check on ``functions`` (the student's, in the order ``ex.functions`` names).

    A wrong answer, a stub that is not done, or a student function that raises all give a FAIL
    outcome; only BaseExceptions that are not Exceptions (KeyboardInterrupt, SystemExit) escape.
    """
    label = ex.function_label
    try:
        ex.check(*functions)
    except NotImplementedError as err:
        return not_done(ex.id, ex.functions, err)
    except Exception as err:  # noqa: BLE001 - any error in a student's answer is a FAIL
        student_files = _student_files(functions)
        raised_in_student_code = any(
            f.filename in student_files or _is_notebook_file(f.filename) for f in _frames(err))
        if raised_in_student_code:
            return Outcome(FAIL, prefixed(
                ex.id, f"{label} raised {exception_text(err, student_files)}"))
        if isinstance(err, AssertionError):  # expect(), a plain assert, np.testing.assert_*
            text = str(err).strip() or f"a check on {label} failed (the check gave no message)"
            return Outcome(FAIL, prefixed(ex.id, text))
        return Outcome(FAIL, prefixed(
            ex.id, f"checking {label} failed with {exception_text(err)}; "
                   "does it return what its docstring says?"))
    return Outcome(PASS, f"Exercise {ex.id} passed")
