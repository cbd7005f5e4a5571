"""Execute the course headless: executed notebooks, their HTML and every saved figure under build/.

``python -m labkit.course --out build`` (``make course``) runs each lecture notebook top to bottom
(full mode unless ``LABKIT_FAST=1``), writes the executed copy to ``build/notebooks/``, an HTML
copy to ``build/html/`` and lets the notebooks save their figures to ``build/figures/``; then it
redraws the benchmark figures from ``benchmarks/results/*.json`` there (:mod:`labkit.report`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labkit.core import fast_mode, repo_root


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    name: str
    seconds: float
    error: str | None = None


def execute_notebook(path: Path, out_dir: Path, figures_dir: Path, timeout: int = 3600) -> NotebookRun:
    """Execute ``path`` in its own folder; write the executed copy and its HTML under ``out_dir``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits this process's environment: point figure saving at the build folder.
    os.environ["LABKIT_FIGURES_DIR"] = str(figures_dir)
    # No widget frontend runs here: widgets draw their static form into the saved copies.
    os.environ["LABKIT_STATIC"] = "1"
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    seconds = time.perf_counter() - start
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    (out_dir / "html").mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out_dir / "notebooks" / path.name)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    (out_dir / "html" / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    return NotebookRun(path.name, seconds, error)


def build_course(out: str | Path = "build", notebooks: list[Path] | None = None) -> list[NotebookRun]:
    """Execute every lecture notebook (or the given ones) and collect outputs under ``out``."""
    root = repo_root() or Path.cwd()
    out = Path(out).resolve()
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = notebooks or sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    runs = []
    for path in paths:
        print(f"[course] {path.name} ({'fast' if fast_mode() else 'full'} mode) ...", flush=True)
        run = execute_notebook(Path(path).resolve(), out, figures_dir)
        status = "ok" if run.error is None else f"FAILED: {run.error}"
        print(f"[course] {path.name}: {run.seconds:.1f} s, {status}", flush=True)
        runs.append(run)
    if notebooks is None:
        # the benchmark figures of the report, redrawn from benchmarks/results (no training)
        from labkit.report import regenerate

        regenerate(results_dir="auto", out=figures_dir)
    figures = sorted(figures_dir.glob("*.png"))
    print(f"[course] {len(figures)} figures in {figures_dir}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.course", description=__doc__)
    parser.add_argument("--out", default="build", help="output folder (default: build)")
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all)")
    args = parser.parse_args(argv)
    runs = build_course(args.out, args.notebooks or None)
    return 0 if all(r.error is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
