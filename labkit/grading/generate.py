"""Generate the exercise notebooks from the solved ones by their solution markers.

In a code cell the solved part sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines;
it becomes ``raise NotImplementedError("Exercise NN.k: <summary>")`` at the same indentation, the
summary being the first line of the cell's ``Exercise NN.k:`` docstring. In a markdown cell
``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` becomes ``_Your answer here._``.
Outputs, execution counts and run-time metadata are dropped, and the JSON is written in
nbformat's layout with sorted keys, so generating twice gives the same bytes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

from labkit.errors import LabkitError
from labkit.grading.notebook import cell_source, exercise_of, notebook_number, read_notebook

BEGIN_CODE, END_CODE = "# BEGIN SOLUTION", "# END SOLUTION"
BEGIN_MD, END_MD = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
ANSWER_PLACEHOLDER = "_Your answer here._"
# Comments that look like markers: a near miss ("#BEGIN SOLUTION", "### END SOLUTIONS") must be an
# error, or the solution would be shipped to students silently.
_CODE_MARKER_LIKE = re.compile(r"^#+\s*(BEGIN|END)[\s_]*SOLUTIONS?\b", re.IGNORECASE)
_MD_MARKER_LIKE = re.compile(r"<!--[^>]*?\b(BEGIN|END)[\s_]*SOLUTIONS?\b", re.IGNORECASE)
_MD_MARKER = re.compile(r"<!--\s*(BEGIN|END) SOLUTION\s*-->")
_CELL_METADATA_DROPPED = ("execution", "collapsed", "scrolled", "trusted")
_NOTEBOOK_METADATA_DROPPED = ("widgets", "signature", "orig_nbformat", "orig_nbformat_minor")


class MarkerError(LabkitError):
    """Solution markers that are unbalanced, misspelt, or in a cell without an exercise id."""


def _where(name: str, index: int, line: int | None = None) -> str:
    place = f"{name}, cell {index + 1}"
    return place if line is None else f"{place}, line {line}"


def replace_code_markers(source: str, stub: str, where: str = "cell") -> str:
    """Replace each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block of ``source`` by ``stub``.

    ``stub`` is one line of code without indentation; it takes the BEGIN line's indentation.
    """
    out: list[str] = []
    begin: tuple[int, str] | None = None  # (line number, indentation) of the open block
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        text = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if text == BEGIN_CODE:
            if begin is not None:
                raise MarkerError(f"{where}, line {number}: '{BEGIN_CODE}' inside the block "
                                  f"opened at line {begin[0]}; close it with '{END_CODE}' first")
            begin = (number, indent)
            continue
        if text == END_CODE:
            if begin is None:
                raise MarkerError(f"{where}, line {number}: '{END_CODE}' without a matching "
                                  f"'{BEGIN_CODE}' above it")
            if indent != begin[1]:
                raise MarkerError(f"{where}, line {number}: '{END_CODE}' is indented differently "
                                  f"from its '{BEGIN_CODE}' at line {begin[0]}; indent both like "
                                  "the code between them")
            newline = "\n" if line.endswith("\n") else ""
            out.append(f"{begin[1]}{stub}{newline}")
            begin = None
            continue
        if _CODE_MARKER_LIKE.match(text):
            raise MarkerError(f"{where}, line {number}: {text!r} looks like a solution marker but "
                              f"is not exactly '{BEGIN_CODE}' or '{END_CODE}' on its own line")
        if begin is None:
            out.append(line)
    if begin is not None:
        raise MarkerError(f"{where}, line {begin[0]}: '{BEGIN_CODE}' is never closed by "
                          f"'{END_CODE}'")
    return "".join(out)


def replace_markdown_markers(source: str, where: str = "cell") -> str:
    """Replace each ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` span by a placeholder."""
    blanked = _MD_MARKER.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)
    near_miss = _MD_MARKER_LIKE.search(blanked)
    if near_miss:
        line = source.count("\n", 0, near_miss.start()) + 1
        text = source[near_miss.start():source.find("-->", near_miss.start()) + 3 or None]
        raise MarkerError(f"{where}, line {line}: {shorten_marker(text)!r} looks like a solution "
                          f"marker but is not exactly '{BEGIN_MD}' or '{END_MD}'")
    out, position, open_at = [], 0, None
    for match in _MD_MARKER.finditer(source):
        line = source.count("\n", 0, match.start()) + 1
        if match.group(1) == "BEGIN":
            if open_at is not None:
                raise MarkerError(f"{where}, line {line}: '{BEGIN_MD}' inside another solution "
                                  "block; close that one first")
            out.append(source[position:match.start()])
            open_at = line
        else:
            if open_at is None:
                raise MarkerError(f"{where}, line {line}: '{END_MD}' without a matching "
                                  f"'{BEGIN_MD}' above it")
            out.append(ANSWER_PLACEHOLDER)
            open_at = None
        position = match.end()
    if open_at is not None:
        raise MarkerError(f"{where}, line {open_at}: '{BEGIN_MD}' is never closed by '{END_MD}'")
    return "".join(out) + source[position:]


def shorten_marker(text: str, limit: int = 60) -> str:
    """A marker-like snippet cut to ``limit`` characters, for error messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _stub(exercise_id: str, summary: str) -> str:
    message = f"Exercise {exercise_id}: {summary}" if summary else f"Exercise {exercise_id}"
    # JSON string escapes are valid Python escapes; keep non-ASCII text readable.
    return f"raise NotImplementedError({json.dumps(message, ensure_ascii=False)})"


def generate_notebook(nb: dict, name: str = "notebook", number: str | None = None) -> dict:
    """The exercise version of the solved notebook ``nb`` (a new dict; ``nb`` is untouched).

    ``name`` appears in error messages; ``number`` (e.g. ``"01"``), when given, must match every
    exercise id. Raises :class:`MarkerError` on unbalanced or misspelt markers, markers in a cell
    without an ``Exercise NN.k:`` docstring, or two cells with the same exercise id.
    """
    out = copy.deepcopy(nb)
    seen: dict[str, int] = {}
    for index, cell in enumerate(out["cells"]):
        source = cell_source(cell)
        where = _where(name, index)
        kind = cell.get("cell_type")
        if kind == "code":
            parsed = exercise_of(source)
            if parsed is not None:
                exercise_id, summary = parsed
                if exercise_id in seen:
                    raise MarkerError(f"{where}: exercise {exercise_id} is already defined in "
                                      f"cell {seen[exercise_id] + 1}; give each exercise its own id")
                if number is not None and exercise_id.split(".")[0] != number:
                    raise MarkerError(f"{where}: exercise {exercise_id} in notebook {number}; "
                                      f"number it {number}.k")
                seen[exercise_id] = index
                stubbed = replace_code_markers(source, _stub(exercise_id, summary), where)
                if stubbed == source:
                    raise MarkerError(f"{where}: exercise {exercise_id} has no '{BEGIN_CODE}' ... "
                                      f"'{END_CODE}' block, so its whole solution would be "
                                      "shipped; mark the part students write")
                source = stubbed
            elif any(_CODE_MARKER_LIKE.match(line.strip()) for line in source.splitlines()):
                raise MarkerError(f"{where}: solution markers in a cell without an exercise id; "
                                  "start the first function's docstring with "
                                  "'Exercise NN.k: <one-line summary>'")
            cell["outputs"] = []
            cell["execution_count"] = None
        elif kind == "markdown":
            source = replace_markdown_markers(source, where)
        elif _MD_MARKER_LIKE.search(source) or any(
                _CODE_MARKER_LIKE.match(line.strip()) for line in source.splitlines()):
            raise MarkerError(f"{where}: solution markers in a {kind} cell; only code and "
                              "markdown cells may hold them")
        cell["source"] = source
        metadata = cell.get("metadata", {})
        for key in _CELL_METADATA_DROPPED:
            metadata.pop(key, None)
        if "id" not in cell and (out.get("nbformat", 4), out.get("nbformat_minor", 0)) >= (4, 5):
            # nbformat would invent a random id; a derived one keeps generation deterministic.
            cell["id"] = hashlib.sha1(f"{index}:{source}".encode()).hexdigest()[:8]
    metadata = out.setdefault("metadata", {})
    for key in _NOTEBOOK_METADATA_DROPPED:
        metadata.pop(key, None)
    metadata["labkit"] = {
        "generated_from": f"solutions/{name}",
        "note": "generated by `labkit make-exercises`; edit the solutions notebook instead",
    }
    return out


def render(nb: dict) -> str:
    """The notebook as JSON text, laid out exactly like ``nbformat.write`` (sorted keys, indent 1)."""
    nb = copy.deepcopy(nb)
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(keepends=True)
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False,
                      separators=(",", ": ")) + "\n"


def generate_file(solution: str | Path) -> str:
    """The exercise notebook generated from the solved notebook file ``solution``, as JSON text."""
    solution = Path(solution)
    nb = read_notebook(solution)
    return render(generate_notebook(nb, solution.name, notebook_number(solution)))


def make_exercises(solutions_dir: str | Path, exercises_dir: str | Path,
                   check: bool = False) -> list[Path]:
    """Generate ``exercises_dir/NN_*.ipynb`` from every ``solutions_dir/*.ipynb``.

    Returns the exercise notebooks that differed from what generation produces (and were
    rewritten, unless ``check``); with ``check=True`` nothing is written, and exercise notebooks
    without a solution notebook are listed as differing too.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    if not solutions_dir.is_dir():
        raise LabkitError(f"solutions folder {solutions_dir} does not exist")
    differ = []
    sources = sorted(solutions_dir.glob("*.ipynb"))
    # Generate everything before writing anything: one bad notebook leaves exercises/ untouched.
    texts = {solution.name: generate_file(solution) for solution in sources}
    for name, text in texts.items():
        target = exercises_dir / name
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            continue
        differ.append(target)
        if not check:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    if check and exercises_dir.is_dir():
        names = {s.name for s in sources}
        differ += [p for p in sorted(exercises_dir.glob("*.ipynb")) if p.name not in names]
    return differ


def orphan_exercises(solutions_dir: str | Path, exercises_dir: str | Path) -> list[Path]:
    """Exercise notebooks that have no solution notebook to be generated from."""
    names = {p.name for p in Path(solutions_dir).glob("*.ipynb")}
    return [p for p in sorted(Path(exercises_dir).glob("*.ipynb")) if p.name not in names]
