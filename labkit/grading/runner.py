"""Grade a student notebook offline: each exercise in a fresh Python process with a time limit.

For every exercise registered for the notebook's number, a subprocess runs the notebook's set-up
cells, then its exercise cells up to and including this exercise's (each guarded, so an earlier
cell that fails cannot break a later exercise), then the check. The result comes back through a
file, never stdout; a process that loops is killed with its whole process group when its time is
up; one that exits or crashes becomes an ERROR for its exercise only.

On Linux the processes are forked from a :class:`ForkServer` that has imported the checks'
modules (torch among them) once, which makes each exercise cost milliseconds instead of seconds;
``LABKIT_GRADE_START=spawn`` (or ``start_method="spawn"``) starts a new interpreter for each.
Either way every exercise runs single-threaded, several at once.
"""
from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.errors import LabkitError
from labkit.grading.evaluate import ERROR, MISSING, PASS, STATUSES, TIMEOUT, prefixed, shorten
from labkit.grading.notebook import (
    cell_source,
    exercise_cells,
    notebook_number,
    python_source,
    read_notebook,
    setup_cells,
)
from labkit.grading.registry import Exercise, Registry, default_registry

OUTPUT_TAIL_BYTES = 4000  # what is kept of a child's stdout/stderr, for diagnosing crashes


@dataclass
class Result:
    """The grade of one exercise.

    ``status`` is one of PASS, FAIL, ERROR, TIMEOUT, MISSING; ``message`` starts with
    ``Exercise NN.k``; ``output`` is the tail of what the notebook's code printed.
    """

    exercise_id: str
    function: str
    status: str
    message: str
    seconds: float = 0.0
    output: str = ""

    @property
    def passed(self) -> bool:
        """True when the exercise passed."""
        return self.status == PASS

    def to_dict(self) -> dict:
        """The result as a JSON-ready dict (with ``passed``)."""
        return {**asdict(self), "passed": self.passed}


class _Tail:
    """Drain a pipe in a thread, keeping only its last bytes (student code may print gigabytes)."""

    def __init__(self, pipe, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.limit, self.data, self.total = limit, bytearray(), 0
        self.thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self.thread.start()

    def _drain(self, pipe) -> None:
        with pipe:
            while chunk := pipe.read1(1 << 16):
                self.total += len(chunk)
                self.data += chunk
                if len(self.data) > 2 * self.limit:
                    del self.data[: -self.limit]

    def text(self) -> str:
        return bytes(self.data[-self.limit:]).decode("utf-8", errors="replace")


@dataclass
class _Run:
    """What one exercise's process did: its exit status, whether it was killed, its output."""

    returncode: int
    timed_out: bool
    output: str
    seconds: float


def _kill_group(pid: int) -> None:
    """Kill a child and everything it started (they share the child's own process group)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows: no process groups of this kind
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def _finish_output(tail: _Tail, pid: int) -> str:
    tail.thread.join(timeout=1.0)
    if tail.thread.is_alive():
        # Something the notebook started still holds the pipe open: it lives in the child's
        # process group, which therefore still exists; end it.
        _kill_group(pid)
        tail.thread.join(timeout=1.0)
    return tail.text()


def _child_env() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", LABKIT_FAST="1", PYTHONIOENCODING="utf-8")
    # One thread per exercise (several run at once). It also keeps the fork server safe: a
    # process that has started an OpenMP thread pool cannot fork children that use one.
    env.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
    # The child must import this very labkit, wherever the grader was started from.
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    return env


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _spawn(spec_path: Path, timeout: float, live: set[int]) -> _Run:
    """Run the exercise in a new Python interpreter (slower: it imports everything afresh)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit.grading._child", str(spec_path)],
        cwd=spec_path.parent, env=_child_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    tail = _Tail(proc.stdout)
    live.add(proc.pid)
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)  # the child is not reaped yet, so its group id is still its own
        proc.wait()
    except BaseException:  # Ctrl-C in the grader: leave no stray children behind
        _kill_group(proc.pid)
        proc.wait()
        raise
    finally:
        live.discard(proc.pid)
    seconds = time.monotonic() - start
    return _Run(proc.returncode, timed_out, _finish_output(tail, proc.pid), seconds)


class ForkServer:
    """A Python process that imports the checks' modules once, then forks a child per exercise.

    Importing torch costs seconds; forking a process that has imported it costs milliseconds.
    The server runs no notebook code itself, so each child starts as clean as a new interpreter.
    Per request it forks a small watcher that forks the exercise's child, enforces its time
    limit (killing the child's process group) and reports its exit status on a socket of that
    request alone; the child's stdout and stderr go straight to a pipe the grader drains. So one
    server serves any number of exercises at once. Linux only (``fork``, descriptor passing).
    """

    STARTUP_GRACE = 180.0  # seconds the server may spend importing before its first reply
    REPLY_GRACE = 30.0  # beyond an exercise's time limit, before the server counts as hung

    def __init__(self, preload: list[str], check_files: list[str]) -> None:
        self.workdir = tempfile.TemporaryDirectory(prefix="labkit-forkserver-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labkit.grading._child", "--serve", str(theirs.fileno()),
                 json.dumps({"preload": preload, "check_files": check_files})],
                pass_fds=[theirs.fileno()], cwd=self.workdir.name, env=_child_env(),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.alive = True
        self.ready = False  # set once the server has answered (its imports are done)
        self._lock = threading.Lock()

    @staticmethod
    def _receive(sock: socket.socket, timeout: float) -> dict:
        sock.settimeout(timeout)
        message = sock.recv(1 << 16)
        if not message:
            raise ConnectionError("the fork server's watcher exited without a reply")
        return json.loads(message)

    def run(self, spec_path: Path, timeout: float, live: set[int]) -> _Run | None:
        """Run one exercise; None when the server failed (the caller then spawns instead)."""
        replies, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        read_end, write_end = os.pipe()
        command = json.dumps({"spec": str(spec_path), "timeout": timeout}).encode()
        try:
            socket.send_fds(self.sock, [command], [theirs.fileno(), write_end])
        except OSError:
            os.close(read_end)
            replies.close()
            self.close()
            return None
        finally:
            theirs.close()
            os.close(write_end)
        tail = _Tail(os.fdopen(read_end, "rb"))
        pid = None
        with replies:
            try:
                pid = int(self._receive(
                    replies, self.REPLY_GRACE if self.ready else self.STARTUP_GRACE)["pid"])
                self.ready = True
                live.add(pid)
                status = self._receive(replies, timeout + self.REPLY_GRACE)
            except (OSError, ValueError, KeyError, TypeError):  # hung, dead or garbled
                if pid is not None:
                    _kill_group(pid)
                self.close()
                tail.thread.join(timeout=1.0)
                return None
            finally:
                if pid is not None:
                    live.discard(pid)
        output = _finish_output(tail, pid)
        return _Run(int(status["returncode"]), bool(status["timed_out"]), output,
                    float(status["seconds"]))

    def close(self) -> None:
        """Stop the server (closing its socket ends it; running exercises finish on their own)."""
        with self._lock:
            if not self.alive:
                return
            self.alive = False
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc.pid)
            self.proc.wait()
        self.workdir.cleanup()


def default_start_method() -> str:
    """``LABKIT_GRADE_START`` if set, else ``"forkserver"`` on Linux and ``"spawn"`` elsewhere."""
    method = os.environ.get("LABKIT_GRADE_START", "").strip().lower()
    if method:
        if method not in START_METHODS:
            raise LabkitError(f"LABKIT_GRADE_START={method!r}: use one of "
                              f"{', '.join(START_METHODS)}")
        return method
    linux = sys.platform.startswith("linux") and hasattr(socket, "send_fds")
    return "forkserver" if linux else "spawn"


START_METHODS = ("forkserver", "spawn")


def run_exercise(spec: dict, timeout: float, live: set[int] | None = None,
                 server: ForkServer | None = None) -> tuple[dict, float, str]:
    """Run one exercise spec in a fresh process; ``(result dict, seconds, output tail)``.

    The process is forked from ``server`` when one is given (and still works), else a new
    interpreter. ``live`` holds its process id while it runs, so that a caller can end it early.
    """
    exercise_id = spec["exercise"]
    live = set() if live is None else live
    with tempfile.TemporaryDirectory(prefix="labkit-grade-") as tmp:
        result_path = Path(tmp) / "result.json"
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({**spec, "result": str(result_path)}), encoding="utf-8")
        run = server.run(spec_path, timeout, live) if server is not None and server.alive else None
        if run is None:
            run = _spawn(spec_path, timeout, live)
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if run.timed_out:
                result = {"status": TIMEOUT, "message": prefixed(
                    exercise_id, f"did not finish within {timeout:g} s (an endless loop, or far "
                                 "too slow?)")}
            else:
                result = {"status": ERROR,
                          "message": _crash_message(exercise_id, run.returncode, run.output)}
    if result.get("status") not in STATUSES:
        result = {"status": ERROR, "message": prefixed(exercise_id, "the grader got no result")}
    return result, run.seconds, run.output


def _crash_message(exercise_id: str, returncode: int, output: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        text = (f"the Python process running it crashed ({name}, e.g. os.abort, a segfault or "
                "running out of memory) before the check finished")
    else:
        text = (f"the notebook's code ended the Python process (exit code {returncode}, e.g. "
                "os._exit) before the check finished")
    last = [line for line in output.splitlines() if line.strip()]
    if last and returncode != 0:
        text += f"; last output: {shorten(last[-1], 160)}"
    return prefixed(exercise_id, text)


def _setup_imports(sources: list[str]) -> list[str]:
    """Modules the set-up cells import at top level (worth importing once in the fork server)."""
    names: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(python_source(source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return sorted(names)


def _plan(path: Path, nb: dict, exercises: list[Exercise]) -> dict[str, dict]:
    """For each exercise found in the notebook: the spec of cells and check its child runs."""
    cells = nb["cells"]
    in_notebook = exercise_cells(nb)
    found = {c.id: c for c in in_notebook}  # a repeated id: the last cell wins, as in Jupyter
    setup = setup_cells(nb)
    plans = {}
    for ex in exercises:
        target = found.get(ex.id)
        if target is None:
            continue
        run = [{"index": i, "label": "setup", "source": cell_source(cells[i]), "target": False}
               for i in setup]
        run += [{"index": c.index, "label": c.id, "source": c.source,
                 "target": c.index == target.index}
                for c in in_notebook if c.index <= target.index and c.index not in setup]
        plans[ex.id] = {
            "exercise": ex.id,
            "functions": list(ex.functions),
            "check_module": ex.module,
            "check_file": ex.file,
            "cells": run,
            "cwd": str(path.resolve().parent),
        }
    return plans


def grade_notebook(path: str | Path, timeout: float | None = None,
                   registry: Registry | None = None, jobs: int | None = None,
                   start_method: str | None = None) -> list[Result]:
    """Grade every exercise registered for the notebook at ``path``.

    ``timeout`` (seconds) overrides each check's own limit; ``registry`` defaults to the course's
    checks (``labkit.grading.checks_*``); ``jobs`` exercises run at once (default: up to the
    number of CPU cores, at most 4). ``start_method`` is ``"forkserver"`` (fork each exercise's
    process from one that has imported the checks' modules: fast; Linux) or ``"spawn"`` (a new
    interpreter per exercise); see :func:`default_start_method`. Raises LabkitError for a
    missing or unreadable notebook, or one whose number has no registered exercises.
    """
    path = Path(path)
    nb = read_notebook(path)
    registry = default_registry() if registry is None else registry
    number = notebook_number(path, nb)
    if number is None:
        raise LabkitError(
            f"cannot tell which notebook {path} is: its name does not start with a two-digit "
            "number (like 01_stft_basics.ipynb) and it holds no 'Exercise NN.k:' docstrings")
    exercises = registry.for_notebook(number)
    if not exercises:
        known = sorted({ex.notebook for ex in registry})
        raise LabkitError(f"no exercises are registered for notebook {number} ({path}); "
                          f"notebooks with exercises: {', '.join(known) or 'none'}")
    if timeout is not None and timeout <= 0:
        raise LabkitError(f"timeout={timeout!r}: give a positive number of seconds")
    method = default_start_method() if start_method is None else start_method
    if method not in START_METHODS:
        raise LabkitError(f"start_method={method!r}: use one of {', '.join(START_METHODS)}")
    plans = _plan(path, nb, exercises)
    preload = sorted({ex.module for ex in exercises if ex.file is None} | {"labkit"}
                     | set(_setup_imports([cell_source(nb["cells"][i]) for i in setup_cells(nb)])))
    check_files = sorted({ex.file for ex in exercises if ex.file is not None})

    live: set[int] = set()  # process ids of the exercises running now
    server = ForkServer(preload, check_files) if method == "forkserver" and plans else None

    def grade(ex: Exercise) -> Result:
        if ex.id not in plans:
            return Result(ex.id, ex.function_label, MISSING, prefixed(
                ex.id, f"no cell in the notebook has a docstring starting 'Exercise {ex.id}:'; "
                       "was the exercise cell deleted or its docstring changed?"))
        limit = ex.timeout if timeout is None else float(timeout)
        result, seconds, output = run_exercise(plans[ex.id], limit, live, server)
        return Result(ex.id, ex.function_label, result["status"], result["message"],
                      round(seconds, 3), output)

    workers = jobs if jobs is not None else min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(exercises))))
    try:
        return list(pool.map(grade, exercises))
    except BaseException:
        # Ctrl-C reaches only this thread; the children run in their own sessions, so end them
        # here instead of waiting out their time limits.
        pool.shutdown(wait=False, cancel_futures=True)
        for pid in list(live):
            _kill_group(pid)
        raise
    finally:
        pool.shutdown(wait=True)
        if server is not None:
            server.close()


def format_report(results: list[Result], path: str | Path | None = None) -> str:
    """A per-exercise table (id, function, status, message) and the total, as text."""
    header = ("exercise", "function", "result", "message")
    rows = [(r.exercise_id, r.function, r.status, "" if r.passed else r.message) for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [f"Grading {path}" if path is not None else "Grading", ""]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    passed = sum(r.passed for r in results)
    lines += ["", f"{passed}/{len(results)} exercises passed"]
    return "\n".join(line.rstrip() for line in lines)


def report_json(results: list[Result], path: str | Path | None = None) -> str:
    """The results as JSON: the notebook, counts and one object per exercise."""
    return json.dumps({
        "notebook": None if path is None else str(path),
        "passed": sum(r.passed for r in results),
        "total": len(results),
        "results": [r.to_dict() for r in results],
    }, indent=2, ensure_ascii=False)
