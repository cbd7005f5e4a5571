"""Reading course notebooks as plain JSON: exercise cells, set-up cells, runnable Python source.

Kept free of nbformat (whose import costs about a second) because the grader calls it once per
exercise. An exercise cell is a code cell whose first docstring reads ``Exercise NN.k: summary``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabkitError

# The docstring that names an exercise: triple quotes, then "Exercise NN.k:" and a one-line summary.
EXERCISE_DOCSTRING = re.compile(
    r"""^[ \t]*[rRuU]?(?:\"\"\"|''')[ \t]*Exercise[ \t]+(\d{2}\.\d+)[ \t]*:[ \t]*([^\n]*)$""",
    re.MULTILINE,
)
NOTEBOOK_NUMBER = re.compile(r"^(\d{2})(?:_|\.|$)")
SETUP_TAG = "setup"
# Cell magics whose body is still Python; any other cell magic (%%bash, %%writefile, ...) is skipped.
_PYTHON_CELL_MAGICS = {"%%time", "%%timeit", "%%capture"}


@dataclass(frozen=True)
class ExerciseCell:
    """An exercise cell: its position in the notebook, id, summary and source."""

    index: int
    id: str
    summary: str
    source: str


def read_notebook(path: str | Path) -> dict:
    """Read the notebook at ``path`` as JSON; a missing file or invalid JSON is a LabkitError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabkitError(f"notebook {path} does not exist") from None
    except IsADirectoryError:
        raise LabkitError(f"{path} is a folder; pass a notebook file (.ipynb)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LabkitError(f"cannot read notebook {path}: {err}") from None
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as err:
        raise LabkitError(
            f"{path} is not a valid notebook: its JSON is broken at line {err.lineno}, "
            f"column {err.colno} ({err.msg}); restore it from a backup or re-download it"
        ) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise LabkitError(f"{path} is not a Jupyter notebook (no 'cells' list in its JSON)")
    if nb.get("nbformat", 4) < 4:
        raise LabkitError(
            f"{path} uses notebook format {nb.get('nbformat')}; open and save it in Jupyter to "
            "convert it to format 4"
        )
    for i, cell in enumerate(nb["cells"], 1):
        if not isinstance(cell, dict) or "cell_type" not in cell:
            raise LabkitError(f"{path}: cell {i} is not a notebook cell (no 'cell_type')")
    return nb


def cell_source(cell: dict) -> str:
    """The cell's source as one string (notebook JSON stores it as a string or a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def exercise_of(source: str) -> tuple[str, str] | None:
    """``(id, summary)`` from the first ``Exercise NN.k: summary`` docstring in ``source``."""
    match = EXERCISE_DOCSTRING.search(source)
    if match is None:
        return None
    summary = match.group(2).strip()
    for quote in ('"""', "'''"):
        if summary.endswith(quote):  # a one-line docstring
            summary = summary[: -len(quote)].rstrip()
    return match.group(1), summary


def exercise_cells(nb: dict) -> list[ExerciseCell]:
    """Every exercise cell of ``nb``, in notebook order."""
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        source = cell_source(cell)
        parsed = exercise_of(source)
        if parsed is not None:
            found.append(ExerciseCell(index, parsed[0], parsed[1], source))
    return found


def is_setup_cell(cell: dict) -> bool:
    """True when the cell's metadata tags it ``setup``."""
    tags = cell.get("metadata", {}).get("tags", [])
    return cell.get("cell_type") == "code" and isinstance(tags, list) and SETUP_TAG in tags


def setup_cells(nb: dict) -> list[int]:
    """Indices of the set-up cells: those tagged ``setup``, else the first code cell.

    An exercise cell is never a set-up cell.
    """
    exercises = {c.index for c in exercise_cells(nb)}
    tagged = [i for i, c in enumerate(nb["cells"]) if is_setup_cell(c) and i not in exercises]
    if tagged:
        return tagged
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") == "code":
            return [] if i in exercises else [i]
    return []


def notebook_number(path: str | Path, nb: dict | None = None) -> str | None:
    """The notebook's two-digit number: from its file name (``01_stft.ipynb``) or its exercise ids."""
    match = NOTEBOOK_NUMBER.match(Path(path).name)
    if match:
        return match.group(1)
    if nb is not None:
        numbers = sorted({c.id.split(".")[0] for c in exercise_cells(nb)})
        if len(numbers) == 1:
            return numbers[0]
    return None


def python_source(source: str) -> str:
    """The cell's source as plain Python: IPython magics and shell lines become no-ops.

    Source that already compiles is returned unchanged, so a ``%`` inside a string never matters.
    """
    try:
        compile(source, "<cell>", "exec")
        return source
    except SyntaxError:
        pass
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].split()[0]
        if magic not in _PYTHON_CELL_MAGICS:
            return ""
        lines = [""] + lines[1:]  # keep line numbers of the body
    out = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            out.append(line[: len(line) - len(stripped)] + "pass")
        else:
            out.append(line)
    return "\n".join(out) + "\n"
