"""Exercise checks: how a check is declared, and the registry that finds them.

A check module (``labkit/grading/checks_NN.py`` for notebook NN) declares one check per exercise::

    @exercise("01.1", function="frame_signal", timeout=60)
    def check_frame_signal(frame_signal):
        out = frame_signal(np.arange(10.0), 4, 2)
        expect(out.shape == (4, 4), f"returns shape {out.shape}, expected (4, 4)")

The decorator only labels the function; a :class:`Registry` is built by scanning modules for those
labels, so tests can build their own registry from a fixture module without touching the real one.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from labkit.errors import LabkitError

EXERCISE_ID = re.compile(r"^(\d{2})\.(\d+)$")
DEFAULT_TIMEOUT = 60.0
_LABEL = "__labkit_exercise__"
_FILE_MODULE_PREFIX = "labkit_checks_file_"


class ExerciseFailure(AssertionError):
    """A check found the answer wrong; the message says what was wrong and what was expected."""


class UnknownExerciseError(LabkitError, KeyError):
    """An exercise id that no check is registered for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def expect(condition: object, message: str) -> None:
    """Fail the exercise with ``message`` unless ``condition`` is true.

    ``message`` says what the answer did and what was expected, e.g.
    ``"returns shape (3, 4), expected (4, 4)"``; the report prefixes it with the exercise id.
    """
    try:
        ok = bool(condition)
    except (ValueError, RuntimeError) as err:  # numpy/torch arrays of several elements
        raise TypeError(
            f"expect() needs a single truth value, got {type(condition).__name__} "
            f"({err}); reduce it first, e.g. with np.all(...) or torch.allclose(...)"
        ) from None
    if not ok:
        raise ExerciseFailure(message)


def validate_exercise_id(exercise_id: str) -> str:
    """Return ``exercise_id`` if it reads like ``"01.2"`` (two-digit notebook, exercise number)."""
    if not isinstance(exercise_id, str) or not EXERCISE_ID.match(exercise_id):
        raise LabkitError(
            f"exercise id {exercise_id!r} is not of the form 'NN.k' "
            "(two-digit notebook number, a dot, the exercise number), e.g. '01.2'"
        )
    return exercise_id


@dataclass(frozen=True)
class Exercise:
    """One registered check.

    ``functions`` are the names the student's notebook defines; the check receives them in that
    order. ``module`` is the check's module name and ``file`` its file when it was loaded from a
    path (fixtures), so that a grading subprocess can load the same check again.
    """

    id: str
    functions: tuple[str, ...]
    check: Callable[..., object]
    timeout: float = DEFAULT_TIMEOUT
    module: str = ""
    file: str | None = None

    @property
    def notebook(self) -> str:
        """The two-digit notebook number, e.g. ``"01"`` for exercise ``"01.2"``."""
        return self.id.split(".")[0]

    @property
    def function_label(self) -> str:
        """The function names joined for display, e.g. ``"stft, istft"``."""
        return ", ".join(self.functions)


def exercise(exercise_id: str, function: str | tuple[str, ...] | list[str],
             timeout: float = DEFAULT_TIMEOUT) -> Callable[[Callable], Callable]:
    """Declare the decorated function as the check of exercise ``exercise_id``.

    ``function`` names the function (or a tuple of functions) the student's notebook defines; the
    check receives them positionally. ``timeout`` is the wall-clock limit in seconds for grading
    this exercise in its own process (set-up and notebook cells included).
    """
    validate_exercise_id(exercise_id)
    names = (function,) if isinstance(function, str) else tuple(function)
    if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise LabkitError(
            f"exercise {exercise_id}: function={function!r} must be a function name or a tuple "
            "of function names"
        )
    if not timeout or timeout <= 0:
        raise LabkitError(f"exercise {exercise_id}: timeout={timeout!r} must be a positive number")

    def label(check: Callable) -> Callable:
        setattr(check, _LABEL, Exercise(exercise_id, names, check, float(timeout),
                                        getattr(check, "__module__", "")))
        return check

    return label


class Registry:
    """The checks known to the grader, by exercise id."""

    def __init__(self, exercises: Iterable[Exercise] = ()) -> None:
        self._exercises: dict[str, Exercise] = {}
        for ex in exercises:
            self.add(ex)

    def add(self, ex: Exercise) -> None:
        """Register ``ex``; two checks for one id is an error naming both modules."""
        old = self._exercises.get(ex.id)
        if old is not None and old.check is not ex.check:
            raise LabkitError(
                f"exercise {ex.id} has two checks: {old.module}.{old.check.__name__} and "
                f"{ex.module}.{ex.check.__name__}"
            )
        self._exercises[ex.id] = ex

    def add_module(self, module: ModuleType, file: str | None = None) -> None:
        """Register every check declared with :func:`exercise` in ``module``."""
        for value in vars(module).values():
            ex = getattr(value, _LABEL, None)
            if isinstance(ex, Exercise) and ex.module == module.__name__:
                self.add(Exercise(ex.id, ex.functions, ex.check, ex.timeout, module.__name__,
                                  file))

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType | str]) -> Registry:
        """A registry of the checks in ``modules`` (module objects or importable names)."""
        reg = cls()
        for module in modules:
            reg.add_module(importlib.import_module(module) if isinstance(module, str) else module)
        return reg

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> Registry:
        """A registry of the checks in the Python files ``paths`` (e.g. test fixtures)."""
        reg = cls()
        for path in paths:
            module = load_checks_file(path)
            reg.add_module(module, file=str(Path(path).resolve()))
        return reg

    def get(self, exercise_id: str) -> Exercise:
        """The check of ``exercise_id``; an unknown id is an error listing the known ones."""
        try:
            return self._exercises[exercise_id]
        except KeyError:
            known = ", ".join(self.ids()) or "none"
            raise UnknownExerciseError(
                f"no exercise {exercise_id!r}; known exercises: {known}"
            ) from None

    def ids(self) -> list[str]:
        """Every registered id, in notebook and exercise order (01.2 before 01.10)."""
        return sorted(self._exercises, key=_id_key)

    def for_notebook(self, number: str) -> list[Exercise]:
        """The exercises of notebook ``number`` (e.g. ``"01"``), in order."""
        return [self._exercises[i] for i in self.ids() if i.split(".")[0] == number]

    def __contains__(self, exercise_id: object) -> bool:
        return exercise_id in self._exercises

    def __iter__(self) -> Iterator[Exercise]:
        return (self._exercises[i] for i in self.ids())

    def __len__(self) -> int:
        return len(self._exercises)

    def __repr__(self) -> str:
        return f"Registry({', '.join(self.ids())})"


def _id_key(exercise_id: str) -> tuple[int, int]:
    notebook, number = exercise_id.split(".")
    return int(notebook), int(number)


def load_checks_file(path: str | Path) -> ModuleType:
    """Import the Python file ``path`` as a module (once per file; the name encodes the path)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise LabkitError(f"checks file {path} does not exist")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"{_FILE_MODULE_PREFIX}{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def check_module_names() -> list[str]:
    """The names of the course's check modules ``labkit.grading.checks_*``."""
    import labkit.grading as package

    return sorted(
        f"{package.__name__}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.startswith("checks_")
    )


def default_registry(strict: bool = False) -> Registry:
    """The registry of every ``labkit.grading.checks_*`` module.

    A check module that fails to import is skipped with a warning naming it (so one broken
    notebook's checks do not stop the others from being graded), or raised with ``strict=True``.
    """
    reg = Registry()
    for name in check_module_names():
        try:
            module = importlib.import_module(name)
        except Exception as err:
            if strict:
                raise
            warnings.warn(f"labkit: skipping check module {name}: {type(err).__name__}: {err}",
                          RuntimeWarning, stacklevel=2)
            continue
        reg.add_module(module)
    return reg
