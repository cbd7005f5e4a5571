"""The exercise machinery: generation from solution markers, the grader, labkit.check, the CLI.

Fixture notebook 90 (tests/fixtures/grading/) has six exercises whose checks live in
checks_fixture.py, registered into a registry of the tests' own; the real notebooks in solutions/
are checked against the real registry at the end.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

import labkit
from labkit.core import repo_root
from labkit.errors import LabkitError
from labkit.grading import (
    ExerciseFailure,
    MarkerError,
    Registry,
    UnknownExerciseError,
    check,
    default_registry,
    exercise,
    expect,
    generate_notebook,
    grade_notebook,
    make_exercises,
)
from labkit.grading.generate import generate_file, render
from labkit.grading.notebook import (
    cell_source,
    exercise_cells,
    exercise_of,
    notebook_number,
    python_source,
    read_notebook,
    setup_cells,
)
from labkit.grading.registry import check_module_names
from labkit.grading.runner import (
    OUTPUT_TAIL_BYTES,
    START_METHODS,
    ForkServer,
    _setup_imports,
    default_start_method,
    format_report,
    run_exercise,
)

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
CHECKS = FIXTURES / "checks_fixture.py"
IDS = ["90.1", "90.2", "90.3", "90.4", "90.5", "90.6"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_files([CHECKS])


def solved_nb() -> dict:
    return read_notebook(FIXTURES / "90_solved.ipynb")


def sources(nb: dict) -> list[str]:
    return [cell_source(c) for c in nb["cells"]]


# --- generation ------------------------------------------------------------------------------

def test_generation_replaces_code_markers_exactly():
    out = sources(generate_notebook(solved_nb(), "90_solved.ipynb", "90"))
    assert out[4] == (
        'def double(x):\n'
        '    """Exercise 90.1: multiply x by SCALE.\n\n'
        '    x: a numpy array; returns an array of the same shape.\n'
        '    """\n'
        '    raise NotImplementedError("Exercise 90.1: multiply x by SCALE.")\n'
    )
    # A block nested in a loop keeps its indentation; the code around it stays.
    assert out[5] == (
        'def clip_unit(x):\n'
        '    """Exercise 90.2: clip x to [-1, 1] without np.clip."""\n'
        '    out = np.array(x, dtype=float)\n'
        '    for i in range(out.size):\n'
        '        raise NotImplementedError("Exercise 90.2: clip x to [-1, 1] without np.clip.")\n'
        '    return out\n'
    )
    # Two functions, two blocks, one id; quotes and backslashes in the summary are escaped.
    stub = ('raise NotImplementedError('
            '"Exercise 90.3: encode text as UTF-8 bytes \\"and back\\" \\\\ é.")')
    assert out[6].count(stub) == 2
    assert "text.encode" not in out[6] and "data.decode" not in out[6]
    namespace: dict = {}
    exec(compile(out[6], "<generated>", "exec"), namespace)  # noqa: S102
    with pytest.raises(NotImplementedError) as info:
        namespace["decode"](b"")
    assert str(info.value) == 'Exercise 90.3: encode text as UTF-8 bytes "and back" \\ é.'


def test_generation_replaces_markdown_markers():
    out = sources(generate_notebook(solved_nb(), "90_solved.ipynb"))
    assert out[2] == ("Why taper a frame before the FFT?\n\n_Your answer here._\n\n"
                      "And in one word? _Your answer here._")


def test_generation_keeps_signatures_docstrings_and_other_cells():
    solved = solved_nb()
    generated = generate_notebook(solved, "90_solved.ipynb")
    assert len(generated["cells"]) == len(solved["cells"])
    for before, after in zip(sources(solved), sources(generated)):
        if "BEGIN SOLUTION" not in before:
            assert after == before
            continue
        if "<!--" in before:
            continue
        old, new = ast.parse(before), ast.parse(after)
        defs = [(f.name, ast.unparse(f.args), ast.get_docstring(f)) for f in old.body
                if isinstance(f, ast.FunctionDef)]
        assert defs == [(f.name, ast.unparse(f.args), ast.get_docstring(f)) for f in new.body
                        if isinstance(f, ast.FunctionDef)]
    assert solved["cells"][4]["outputs"], "the fixture must have an output to strip"


def test_generated_notebook_is_clean_valid_and_deterministic():
    generated = generate_notebook(solved_nb(), "90_solved.ipynb")
    for cell in generated["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
        assert "execution" not in cell["metadata"]
    assert generated["cells"][1]["metadata"]["tags"] == ["setup"]  # tags survive
    assert generated["metadata"]["labkit"]["generated_from"] == "solutions/90_solved.ipynb"
    text = render(generated)
    nbformat.validate(nbformat.reads(text, as_version=4))
    assert text == render(generate_notebook(solved_nb(), "90_solved.ipynb"))
    # Laid out as nbformat writes it, so Jupyter saving the file unchanged keeps its bytes.
    assert text == nbformat.writes(nbformat.reads(text, as_version=4)) + "\n"


def test_generation_is_idempotent(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    shutil.copy(FIXTURES / "90_solved.ipynb", solutions)
    assert make_exercises(solutions, exercises) == [exercises / "90_solved.ipynb"]
    first = (exercises / "90_solved.ipynb").read_bytes()
    assert make_exercises(solutions, exercises) == []  # nothing left to change
    assert (exercises / "90_solved.ipynb").read_bytes() == first
    # A generated cell keeps no markers and no solution: nothing more to take out of it.
    generated = generate_notebook(solved_nb(), "90_solved.ipynb")
    for source in sources(generated):
        assert "SOLUTION" not in source
    assert "SCALE\n    # END" not in render(generated)


def test_generation_gives_cells_without_id_a_stable_id():
    nb = solved_nb()
    for cell in nb["cells"]:
        del cell["id"]
    first = generate_notebook(nb, "x.ipynb")
    assert render(first) == render(generate_notebook(nb, "x.ipynb"))
    ids = [c["id"] for c in first["cells"]]
    assert len(set(ids)) == len(ids)


def test_make_exercises_writes_checks_and_lists_differences(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    shutil.copy(FIXTURES / "90_solved.ipynb", solutions / "90_solved.ipynb")
    target = exercises / "90_solved.ipynb"
    assert make_exercises(solutions, exercises, check=True) == [target]
    assert not exercises.exists()  # --check writes nothing
    assert make_exercises(solutions, exercises) == [target]
    assert target.read_text(encoding="utf-8") == generate_file(solutions / "90_solved.ipynb")
    assert make_exercises(solutions, exercises, check=True) == []
    target.write_text(target.read_text(encoding="utf-8").replace("SCALE", "SCALES"),
                      encoding="utf-8")
    orphan = exercises / "91_orphan.ipynb"
    orphan.write_text("{}", encoding="utf-8")
    assert make_exercises(solutions, exercises, check=True) == [target, orphan]


def _cell_nb(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": source, "id": "x"}


DOC = '    """Exercise 90.1: do it."""\n'


@pytest.mark.parametrize("body, message", [
    ("    # BEGIN SOLUTION\n    return 1\n", r"line 3: '# BEGIN SOLUTION' is never closed"),
    ("    return 1\n    # END SOLUTION\n", r"line 4: '# END SOLUTION' without a matching"),
    ("    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n",
     r"line 4: '# BEGIN SOLUTION' inside the block opened at line 3"),
    ("    # BEGIN SOLUTION\n    return 1\n# END SOLUTION\n", r"line 5: .* indented differently"),
    ("    #BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n",
     r"line 3: '#BEGIN SOLUTION' looks like a solution marker"),
    ("    # BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n",
     r"line 5: '### END SOLUTION' looks like a solution marker"),
])
def test_unbalanced_or_misspelt_code_markers_are_errors(body, message):
    nb = _cell_nb(_code("def f():\n" + DOC + body))
    with pytest.raises(MarkerError, match=r"^demo\.ipynb, cell 1, " + message):
        generate_notebook(nb, "demo.ipynb")


@pytest.mark.parametrize("text, message", [
    ("a <!-- BEGIN SOLUTION --> b", r"line 1: '<!-- BEGIN SOLUTION -->' is never closed"),
    ("a\nb <!-- END SOLUTION -->", r"line 2: '<!-- END SOLUTION -->' without a matching"),
    ("<!-- BEGIN SOLUTION -->x<!-- BEGIN SOLUTION -->", r"inside another solution block"),
    ("<!-- BEGIN SOLUTION -->x\n<!--END SOLUTIONS-->",
     r"line 2: '<!--END SOLUTIONS-->' looks like a solution marker"),
])
def test_unbalanced_markdown_markers_are_errors(text, message):
    nb = _cell_nb({"cell_type": "markdown", "metadata": {}, "source": text, "id": "m"})
    with pytest.raises(MarkerError, match=message):
        generate_notebook(nb, "demo.ipynb")


def test_markers_need_an_exercise_id_a_unique_one_and_the_right_number():
    no_id = _cell_nb(_code("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n"))
    with pytest.raises(MarkerError, match=r"cell 1: solution markers in a cell without an "
                                          r"exercise id"):
        generate_notebook(no_id, "demo.ipynb")
    body = "    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n"
    twice = _cell_nb(_code("def f():\n" + DOC + body), _code("def g():\n" + DOC + body))
    with pytest.raises(MarkerError, match=r"cell 2: exercise 90.1 is already defined in cell 1"):
        generate_notebook(twice, "demo.ipynb")
    with pytest.raises(MarkerError, match=r"exercise 90.1 in notebook 03"):
        generate_notebook(_cell_nb(_code("def f():\n" + DOC)), "03_x.ipynb", "03")
    with pytest.raises(MarkerError, match=r"cell 1: exercise 90.1 has no '# BEGIN SOLUTION' .* "
                                          r"whole solution would be shipped"):
        generate_notebook(_cell_nb(_code("def f():\n" + DOC + "    return 1\n")), "d.ipynb")


# --- reading notebooks -----------------------------------------------------------------------

def test_exercise_ids_setup_cells_and_numbers():
    nb = solved_nb()
    assert [(c.index, c.id) for c in exercise_cells(nb)] == list(zip(range(4, 10), IDS))
    assert setup_cells(nb) == [1]
    untagged = read_notebook(FIXTURES / "90_more_broken.ipynb")
    assert setup_cells(untagged) == [1]  # the first code cell when none is tagged
    assert notebook_number("exercises/02_spec_unet.ipynb") == "02"
    assert notebook_number("my copy.ipynb", nb) == "90"  # renamed: the ids tell
    assert notebook_number("my copy.ipynb", {"cells": []}) is None


def test_exercise_docstring_parsing():
    assert exercise_of('def f():\n    """Exercise 02.3: the mask."""\n') == ("02.3", "the mask.")
    assert exercise_of("def f():\n    r'''Exercise 12.10:  two  words\n    more\n    '''") == (
        "12.10", "two  words")
    assert exercise_of('labkit.check("02.3")\nprint("Exercise 02.3: done")\n') is None


def test_python_source_turns_magics_into_no_ops():
    assert python_source("x = '%d' % 3\n") == "x = '%d' % 3\n"
    assert python_source("%matplotlib inline\nimport os\n  !ls\n") == (
        "pass\nimport os\n  pass\n")
    assert python_source("%%time\nx = 1\n") == "\nx = 1\n"
    assert python_source("%%bash\necho hi\n") == ""


# --- registry and checks ---------------------------------------------------------------------

def test_fixture_registry_is_separate_from_the_real_one(registry):
    assert registry.ids() == IDS
    assert [ex.function_label for ex in registry.for_notebook("90")] == [
        "double", "clip_unit", "encode, decode", "quadruple", "mean_abs", "count_up"]
    assert registry.get("90.6").timeout == 4.0
    assert registry.get("90.1").file == str(CHECKS.resolve())
    assert "90.1" not in default_registry()


def test_unknown_id_lists_known_ones(registry):
    with pytest.raises(UnknownExerciseError, match=r"no exercise '90.9'; known exercises: "
                                                   r"90.1, 90.2, 90.3, 90.4, 90.5, 90.6$"):
        registry.get("90.9")


def test_exercise_declaration_is_validated():
    with pytest.raises(LabkitError, match=r"'1.1' is not of the form 'NN.k'"):
        exercise("1.1", function="f")
    with pytest.raises(LabkitError, match=r"must be a function name"):
        exercise("01.1", function=("f", "not a name"))
    with pytest.raises(LabkitError, match=r"timeout=0 must be a positive number"):
        exercise("01.1", function="f", timeout=0)


def test_two_checks_for_one_id_are_an_error(registry):
    other = exercise("90.1", function="double")(lambda double: None)
    reg = Registry(registry)
    with pytest.raises(LabkitError, match=r"exercise 90.1 has two checks"):
        reg.add(other.__labkit_exercise__)


def test_expect():
    expect(np.float64(1.0) == 1.0, "never shown")
    with pytest.raises(ExerciseFailure, match=r"^returns 3, expected 4$"):
        answer = 3
        expect(answer == 4, "returns 3, expected 4")
    with pytest.raises(TypeError, match=r"expect\(\) needs a single truth value"):
        expect(np.zeros(3) == 0, "ambiguous")


def test_check_modules_import_and_number_their_exercises():
    """Every labkit.grading.checks_NN module imports, and declares only exercises NN.k."""
    reg = default_registry(strict=True)
    for ex in reg:
        assert ex.module.rsplit("_", 1)[-1] == ex.notebook, (ex.id, ex.module)
    assert {ex.module for ex in reg} <= set(check_module_names())


# --- labkit.check inside a notebook ----------------------------------------------------------

def double_right(x):
    return x * 2.0


def test_check_prints_and_returns(registry, capsys):
    assert check("90.1", double_right, registry=registry) is True
    assert capsys.readouterr().out == "Exercise 90.1 passed ✓\n"

    assert check("90.1", lambda x: x * 3.0, registry=registry) is False
    assert capsys.readouterr().out == (
        "Exercise 90.1: double([1, -2]) returns [3.0, -6.0], expected [2.0, -4.0]\n")

    def double(x):
        raise NotImplementedError("Exercise 90.1: multiply x by SCALE.")

    assert check("90.1", double, registry=registry) is False
    assert capsys.readouterr().out == (
        "Exercise 90.1: not done yet (double still raises NotImplementedError)\n")

    def broken(x):
        raise ValueError("boom")

    assert check("90.1", broken, registry=registry) is False
    assert capsys.readouterr().out.startswith(
        "Exercise 90.1: double raised ValueError: boom (test_grading.py, line ")

    assert check("90.1", lambda x: None, registry=registry) is False
    assert capsys.readouterr().out == (
        "Exercise 90.1: returns a NoneType, expected a numpy array\n")


def test_check_by_name_and_from_the_notebook_globals(registry, capsys):
    assert check("90.3", decode=lambda b: b.decode(), encode=lambda s: s.encode(),
                 registry=registry) is True
    notebook = {"__name__": "__main__", "REG": registry}
    exec("import labkit\n"  # noqa: S102
         "def double(x):\n    return x * 2.0\n"
         "ok = labkit.check('90.1', registry=REG)\n"
         "missing = labkit.check('90.5', registry=REG)\n", notebook)
    assert notebook["ok"] is True and notebook["missing"] is False
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "Exercise 90.1 passed ✓",
        "Exercise 90.5: mean_abs is not defined yet; run the cell that defines it first"]
    assert check("90.1", double_right(np.ones(2)), registry=registry) is False
    assert "should be the function itself, got a ndarray" in capsys.readouterr().out


def test_check_usage_errors(registry):
    with pytest.raises(UnknownExerciseError, match=r"no exercise '09.1'; known exercises: 90.1"):
        check("09.1", double_right, registry=registry)
    with pytest.raises(LabkitError, match=r"no exercise '77.1'; known exercises"):
        labkit.check("77.1", double_right)
    with pytest.raises(LabkitError, match=r"checks 1 function\(s\) \(double\), but 2 were"):
        check("90.1", double_right, double_right, registry=registry)
    with pytest.raises(LabkitError, match=r"there is no function 'triple'"):
        check("90.1", triple=double_right, registry=registry)


# --- the grader ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=START_METHODS)
def graded(request, tmp_path_factory, registry) -> dict[str, dict]:
    """Each fixture notebook (and the generated exercise version) graded once per start method."""
    if request.param == "forkserver" and default_start_method() != "forkserver":
        pytest.skip("the fork server needs Linux")
    folder = tmp_path_factory.mktemp("grade")
    for name in ("90_solved", "90_broken", "90_more_broken"):
        shutil.copy(FIXTURES / f"{name}.ipynb", folder / f"{name}.ipynb")
    (folder / "90_exercise.ipynb").write_text(generate_file(FIXTURES / "90_solved.ipynb"),
                                              encoding="utf-8")
    out = {}
    for name in ("90_solved", "90_exercise", "90_broken", "90_more_broken"):
        results = grade_notebook(folder / f"{name}.ipynb", registry=registry,
                                 start_method=request.param)
        out[name] = {r.exercise_id: r for r in results}
        assert list(out[name]) == IDS
    return out


def test_solved_fixture_passes_everything(graded):
    assert {i: r.status for i, r in graded["90_solved"].items()} == dict.fromkeys(IDS, "PASS")


def test_generated_fixture_fails_every_exercise_with_its_name(graded):
    for exercise_id, result in graded["90_exercise"].items():
        assert result.status == "FAIL"
        assert result.message.startswith(f"Exercise {exercise_id}: not done yet (")


def test_misbehaving_notebook_fails_per_exercise(graded):
    results = graded["90_broken"]
    assert {i: r.status for i, r in results.items()} == {
        "90.1": "ERROR", "90.2": "FAIL", "90.3": "PASS", "90.4": "PASS", "90.5": "ERROR",
        "90.6": "TIMEOUT"}
    assert results["90.1"].message == (
        "Exercise 90.1: its cell raised NameError: name 'undefined_name' is not defined "
        "(cell 2, line 6), so the check could not run")
    assert results["90.2"].message.startswith(
        "Exercise 90.2: clip_unit([-3, 0.5, 2]) returns [-3.0, 0.5, 2.0], expected "
        "[-1.0, 0.5, 1.0] (note: the cell of 90.1 raised NameError")
    assert results["90.5"].message.startswith(
        "Exercise 90.5: the notebook's code ended the Python process (exit code 0")
    assert results["90.6"].message.startswith("Exercise 90.6: did not finish within 4 s")
    # Megabytes of output (and forged results) neither garble the protocol nor fill memory.
    assert 0 < len(results["90.3"].output.encode()) <= 2 * OUTPUT_TAIL_BYTES


def test_exits_crashes_and_missing_cells_are_per_exercise(graded):
    results = graded["90_more_broken"]
    assert {i: r.status for i, r in results.items()} == {
        "90.1": "ERROR", "90.2": "ERROR", "90.3": "MISSING", "90.4": "ERROR", "90.5": "MISSING",
        "90.6": "FAIL"}
    assert results["90.1"].message == (
        "Exercise 90.1: its cell called sys.exit(3), so the check could not run")
    assert results["90.2"].message.startswith(
        "Exercise 90.2: clip_unit raised KeyboardInterrupt while being checked")
    assert results["90.3"].message.startswith(
        "Exercise 90.3: the notebook does not define decode")
    assert results["90.4"].message.startswith(
        "Exercise 90.4: the Python process running it crashed (SIGABRT")
    assert results["90.5"].message.startswith(
        "Exercise 90.5: no cell in the notebook has a docstring starting 'Exercise 90.5:'")
    assert results["90.6"].message.startswith(
        "Exercise 90.6: count_up raised IndexError: list index out of range (cell 7, line 4)")


def test_checks_imported_by_module_name_grade_too(tmp_path, monkeypatch):
    """The course's checks reach the child by module name (fixtures above go by file path)."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    monkeypatch.setenv("PYTHONPATH", str(FIXTURES))
    by_name = Registry.from_modules(["checks_fixture"])
    assert by_name.get("90.2").file is None
    solved = shutil.copy(FIXTURES / "90_solved.ipynb", tmp_path / "90_solved.ipynb")
    results = grade_notebook(solved, registry=by_name)
    assert [r.status for r in results] == ["PASS"] * 6


def test_a_dead_fork_server_falls_back_to_a_new_interpreter(tmp_path, registry):
    if default_start_method() != "forkserver":
        pytest.skip("the fork server needs Linux")
    server = ForkServer(["labkit"], [str(CHECKS.resolve())])
    server.proc.kill()
    server.proc.wait()
    nb = shutil.copy(FIXTURES / "90_solved.ipynb", tmp_path / "90_solved.ipynb")
    from labkit.grading.runner import _plan

    spec = _plan(Path(nb), read_notebook(nb), [registry.get("90.4")])["90.4"]
    result, _, _ = run_exercise(spec, 30.0, server=server)
    assert result["status"] == "PASS" and not server.alive


def test_start_method_choice(monkeypatch, registry):
    monkeypatch.setenv("LABKIT_GRADE_START", "spawn")
    assert default_start_method() == "spawn"
    monkeypatch.setenv("LABKIT_GRADE_START", "thread")
    with pytest.raises(LabkitError, match=r"LABKIT_GRADE_START='thread': use one of "
                                          r"forkserver, spawn"):
        default_start_method()
    with pytest.raises(LabkitError, match=r"start_method='fork': use one of"):
        grade_notebook(FIXTURES / "90_solved.ipynb", registry=registry, start_method="fork")


def test_setup_imports_are_found_for_the_fork_server():
    setup = ("%matplotlib inline\nimport numpy as np\nimport labkit.spectral\n"
             "from labkit import audio, fast_mode\nfrom . import local\n"
             "def f():\n    import scipy\n")
    assert _setup_imports([setup]) == [
        "labkit", "labkit.audio", "labkit.fast_mode", "labkit.spectral", "numpy"]


def test_report_table(graded):
    text = format_report(list(graded["90_broken"].values()), "90_broken.ipynb")
    lines = text.splitlines()
    assert lines[0] == "Grading 90_broken.ipynb"
    assert lines[2].split() == ["exercise", "function", "result", "message"]
    assert lines[5].split()[:4] == ["90.3", "encode,", "decode", "PASS"]
    assert lines[-1] == "2/6 exercises passed"


def test_grade_errors(tmp_path, registry):
    with pytest.raises(LabkitError, match=r"no exercises are registered for notebook 77 .*"
                                          r"notebooks with exercises: 90"):
        grade_notebook(_write(tmp_path / "77_x.ipynb", _cell_nb()), registry=registry)
    with pytest.raises(LabkitError, match=r"cannot tell which notebook"):
        grade_notebook(_write(tmp_path / "x.ipynb", _cell_nb()), registry=registry)
    with pytest.raises(LabkitError, match=r"timeout=0: give a positive number"):
        grade_notebook(FIXTURES / "90_solved.ipynb", timeout=0, registry=registry)


def _write(path: Path, nb: dict | str) -> Path:
    path.write_text(nb if isinstance(nb, str) else json.dumps(nb), encoding="utf-8")
    return path


# --- the command line ------------------------------------------------------------------------

def test_cli_grade_text_and_json(tmp_path, capsys):
    from labkit.cli import main

    solved = shutil.copy(FIXTURES / "90_solved.ipynb", tmp_path / "90_solved.ipynb")
    assert main(["grade", str(solved), "--checks", str(CHECKS)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "6/6 exercises passed"

    broken = shutil.copy(FIXTURES / "90_broken.ipynb", tmp_path / "90_broken.ipynb")
    argv = ["grade", str(broken), "--checks", str(CHECKS), "--json", "--timeout", "3"]
    assert main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["passed"], report["total"]) == (2, 6)
    assert [r["status"] for r in report["results"]] == [
        "ERROR", "FAIL", "PASS", "PASS", "ERROR", "TIMEOUT"]
    assert report["results"][5]["message"].startswith("Exercise 90.6: did not finish within 3 s")


@pytest.mark.parametrize("content, message", [
    (None, r"labkit: error: notebook .*nb\.ipynb does not exist"),
    ('{"cells": [', (r"labkit: error: .*nb\.ipynb is not a valid notebook: its JSON is "
                     r"broken at line 1, column 12")),
    ('{"metadata": {}}', r"labkit: error: .*nb\.ipynb is not a Jupyter notebook"),
], ids=["missing", "broken-json", "no-cells"])
def test_cli_unreadable_notebook_is_a_clean_error(tmp_path, capsys, content, message):
    from labkit.cli import main

    path = tmp_path / "01_nb.ipynb"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["grade", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert re.match(message, captured.err)


def test_python_m_labkit_reports_errors_without_traceback(tmp_path):
    bad = _write(tmp_path / "01_bad.ipynb", "not json")
    proc = subprocess.run([sys.executable, "-m", "labkit", "grade", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("labkit: error: ") and "Traceback" not in proc.stderr


def test_cli_make_exercises(tmp_path, capsys):
    from labkit.cli import main

    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    shutil.copy(FIXTURES / "90_solved.ipynb", solutions)
    args = ["make-exercises", "--solutions", str(solutions), "--exercises", str(exercises)]
    assert main([*args, "--check"]) == 1
    assert str(exercises / "90_solved.ipynb") in capsys.readouterr().out
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    bad = _cell_nb(_code("def f():\n" + DOC + "    # BEGIN SOLUTION\n"))
    _write(solutions / "90_bad.ipynb", bad)
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "labkit: error: 90_bad.ipynb, cell 1, line 3: '# BEGIN SOLUTION' is never closed by "
        "'# END SOLUTION'\n")
    assert not (exercises / "90_bad.ipynb").exists()


# --- the real notebooks ----------------------------------------------------------------------

ROOT = repo_root() or Path(__file__).resolve().parents[1]
REAL = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
real_notebooks = pytest.mark.parametrize(
    "solution", REAL or [pytest.param(None, marks=pytest.mark.skip(
        reason="no solutions/NN_*.ipynb notebooks yet"))],
    ids=[p.stem for p in REAL] or ["none"])


@real_notebooks
def test_real_exercises_equal_generation(solution):
    exercise_nb = ROOT / "exercises" / solution.name
    assert exercise_nb.is_file(), f"{exercise_nb} is missing: run `labkit make-exercises`"
    assert exercise_nb.read_text(encoding="utf-8") == generate_file(solution), (
        f"{exercise_nb} differs from what generation produces: run `labkit make-exercises` "
        "(and edit solutions/, never exercises/)")


@real_notebooks
def test_real_exercises_all_have_checks(solution):
    in_notebook = [c.id for c in exercise_cells(read_notebook(solution))]
    registered = [ex.id for ex in default_registry(strict=True).for_notebook(
        notebook_number(solution))]
    assert in_notebook, f"{solution.name} has no 'Exercise NN.k:' cells"
    assert sorted(in_notebook) == sorted(registered)


@real_notebooks
def test_real_solutions_pass_every_check(solution):
    results = grade_notebook(solution)
    assert results
    failed = [r.message for r in results if not r.passed]
    assert not failed, "\n".join(failed)


@real_notebooks
def test_real_exercises_fail_every_check_by_name(solution):
    results = grade_notebook(ROOT / "exercises" / solution.name)
    assert results
    for r in results:
        assert r.status == "FAIL", r.message
        assert r.message.startswith(f"Exercise {r.exercise_id}: not done yet ("), r.message
