"""The set-up files agree with each other and the committed notebooks are clean."""
import json
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def _environment_pip_requirements() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return [r for r in pip if not r.startswith("-e")]


def test_environment_yml_lists_the_same_packages_and_ranges_as_pyproject():
    assert sorted(_environment_pip_requirements()) == sorted(_pyproject_requirements())


def test_environment_yml_brings_ffmpeg_for_musdb():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "ffmpeg" in env["dependencies"]


def test_torch_and_torchaudio_are_pinned_as_a_pair():
    reqs = {r.name: r.specifier for r in map(Requirement, _pyproject_requirements())}
    assert reqs["torch"] == reqs["torchaudio"]
    assert "2.9.1" in reqs["torch"] and "2.12.0" not in reqs["torch"]


NOTEBOOKS = sorted(
    p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb")
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_notebook_has_no_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [
        i for i, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


def test_every_series_notebook_exists_in_all_three_folders():
    names = {folder: {p.name for p in (ROOT / folder).glob("*.ipynb")}
             for folder in ("solutions", "exercises")}
    assert names["solutions"] == names["exercises"], "run `make exercises` after editing solutions/"
