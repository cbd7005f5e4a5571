"""The grader's subprocess: run one exercise of a student notebook and its check.

``python -m labkit.grading._child SPEC.json``. The spec (written by :mod:`labkit.grading.runner`)
holds the check's module, the exercise id, the function names, the notebook cells to run and the
path of the result file. The result goes to that file as JSON, never to stdout, so whatever the
student's code prints cannot garble it; the process then ends at once with ``os._exit`` so that
threads or ``atexit`` hooks the notebook left behind cannot hang it.
"""
from __future__ import annotations

import builtins
import json
import os
import sys
import time
import types
from pathlib import Path

from labkit.grading.evaluate import (
    ERROR,
    MISSING,
    STUDENT_CELL_PREFIX,
    Outcome,
    exception_text,
    not_done,
    prefixed,
    run_check,
)
from labkit.grading.notebook import python_source
from labkit.grading.registry import Exercise, Registry, load_checks_file


def _load_exercise(spec: dict) -> Exercise:
    registry = Registry()
    if spec.get("check_file"):
        registry.add_module(load_checks_file(spec["check_file"]), file=spec["check_file"])
    else:
        import importlib

        registry.add_module(importlib.import_module(spec["check_module"]))
    return registry.get(spec["exercise"])


def _display(*objects: object, **options: object) -> None:
    """Stand-in for IPython's ``display``: there is nothing to display to while grading."""


def _ending(err: BaseException) -> str:
    """How a SystemExit or KeyboardInterrupt ended things, in words."""
    if isinstance(err, SystemExit):
        return f"called sys.exit({'' if err.code is None else repr(err.code)})"
    return f"raised {type(err).__name__}"


def run_spec(spec: dict) -> dict:
    """Run the cells and the check described by ``spec``; the result as a JSON-ready dict."""
    exercise_id = spec["exercise"]
    try:
        ex = _load_exercise(spec)
    except BaseException as err:  # noqa: BLE001 - a broken check is an ERROR, not a crash
        where = spec.get("check_file") or spec.get("check_module")
        return {"status": ERROR, "message": prefixed(
            exercise_id, f"the grader could not load its check from {where}: "
                         f"{exception_text(err)}")}

    workdir = spec.get("cwd")
    if workdir and Path(workdir).is_dir():
        os.chdir(workdir)  # notebooks open files relative to their own folder, as in Jupyter
        sys.path.insert(0, workdir)
    # The notebook's globals are the __main__ module, as in Jupyter (pickle looks classes up there).
    main_module = types.ModuleType("__main__")
    sys.modules["__main__"] = main_module
    namespace = main_module.__dict__
    namespace.update(__builtins__=builtins, display=_display)  # Jupyter's display: a no-op here
    earlier_errors: list[str] = []
    for cell in spec["cells"]:
        filename = f"{STUDENT_CELL_PREFIX} {cell['index'] + 1}>"
        try:
            code = compile(python_source(cell["source"]), filename, "exec")
            exec(code, namespace)  # noqa: S102 - running the student's notebook is the point
        except BaseException as err:  # noqa: BLE001 - student code may raise anything, even exit
            if not cell["target"]:
                # an earlier cell that fails must not stop this exercise from being graded
                owner = ("the setup cell" if cell["label"] == "setup"
                         else f"the cell of {cell['label']}")
                what = (_ending(err) if not isinstance(err, Exception)
                        else f"raised {exception_text(err)}")
                earlier_errors.append(f"{owner} {what}")
                continue
            if isinstance(err, NotImplementedError):
                return _with_context(not_done(exercise_id, ex.functions, err),
                                     earlier_errors)
            text = (_ending(err) if not isinstance(err, Exception)
                    else f"raised {exception_text(err)}")
            return _with_context(Outcome(ERROR, prefixed(
                exercise_id, f"its cell {text}, so the check could not run")),
                earlier_errors)

    missing = [name for name in ex.functions if name not in namespace]
    if missing:
        return _with_context(Outcome(MISSING, prefixed(
            exercise_id, f"the notebook does not define {', '.join(missing)}; its cell must "
                         "define it under that name")), earlier_errors)
    try:
        outcome = run_check(ex, [namespace[name] for name in ex.functions])
    except BaseException as err:  # noqa: BLE001 - SystemExit, KeyboardInterrupt from student code
        outcome = Outcome(ERROR, prefixed(exercise_id, f"{ex.function_label} {_ending(err)} "
                                                       "while being checked"))
    return _with_context(outcome, earlier_errors)


def _with_context(outcome: Outcome, earlier_errors: list[str]) -> dict:
    message = outcome.message
    if earlier_errors and not outcome.passed:
        message += f" (note: {earlier_errors[0]})"
    return {"status": outcome.status, "message": message, "earlier_errors": earlier_errors}


def main(argv: list[str] | None = None) -> None:
    """Entry point: grade the spec named on the command line, or serve with ``--serve FD JSON``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--serve":
        options = json.loads(argv[2])
        serve(int(argv[1]), options.get("preload", []), options.get("check_files", []))
    run_file(argv[0])


def run_file(spec_path: str) -> None:
    """Grade the spec at ``spec_path``, write the result file, and end the process at once."""
    try:
        import resource

        # A notebook that crashes the interpreter must not leave a core dump in the student's folder.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # Windows, or a hard limit we may not lower
        pass
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = run_spec(spec)
    result_path = Path(spec["result"])
    partial = result_path.with_suffix(".partial")
    partial.write_text(json.dumps(result), encoding="utf-8")
    os.replace(partial, result_path)  # the grader never sees half a result
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - the notebook may have closed them
            pass
    os._exit(0)


# --- the fork server -------------------------------------------------------------------------

def serve(sock_fd: int, preload: list[str], check_files: list[str]) -> None:
    """Import ``preload`` and ``check_files`` once, then fork per request; never returns.

    Each request on the socket ``sock_fd`` is ``{"spec": path, "timeout": seconds}`` with two
    descriptors: a socket for the replies and the write end of a pipe for the child's stdout and
    stderr. A watcher forked per request forks the exercise's child, replies ``{"pid": ...}``,
    then ``{"returncode": ..., "timed_out": ...}`` once the child has ended or been killed. The
    server runs no notebook code itself, so every child starts clean; it ends when the grader
    closes its socket.
    """
    import importlib
    import importlib.util
    import signal
    import socket

    for name in preload:
        try:
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                importlib.import_module(name)
        except BaseException:  # noqa: BLE001, S112 - a module that fails here fails in the child
            continue
    for path in check_files:
        try:
            load_checks_file(path)
        except BaseException:  # noqa: BLE001, S112 - the child reports a broken check module
            continue
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # watchers are reaped by the kernel
    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, 1 << 16, 2)
        except OSError:
            break
        if not message or len(fds) != 2:
            break  # the grader closed its end: it is done
        reply_fd, out_fd = fds
        if _fork() == 0:
            try:
                sock.close()
                _watch(json.loads(message), reply_fd, out_fd)
            finally:
                os._exit(0)
        os.close(reply_fd)
        os.close(out_fd)
    os._exit(0)


def _fork() -> int:
    import warnings

    with warnings.catch_warnings():
        # Python 3.12 warns about fork() beside native threads; the grader sets every BLAS
        # and OpenMP pool to one thread, and those libraries re-create theirs after a fork.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _watch(command: dict, reply_fd: int, out_fd: int) -> None:
    """In the watcher: fork the exercise's child, report its id, wait, report how it ended."""
    import signal
    import socket

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this process must wait for its child
    replies = socket.socket(fileno=reply_fd)
    pid = _fork()
    if pid == 0:
        try:
            os.setsid()  # its own process group, so a time-out kills whatever it starts too
            replies.close()
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            run_file(command["spec"])
        finally:
            os._exit(70)  # only reached if grading itself failed; the grader reports it
    os.close(out_fd)
    try:
        start = time.monotonic()
        replies.send(json.dumps({"pid": pid}).encode())
        returncode, timed_out = _wait(pid, float(command["timeout"]))
        replies.send(json.dumps({"returncode": returncode, "timed_out": timed_out,
                                 "seconds": time.monotonic() - start}).encode())
    except OSError:  # the grader is gone: do not leave the child behind
        _kill_quietly(pid)


def _kill_quietly(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """Wait for child ``pid`` at most ``timeout`` s, then kill its process group.

    Returns (exit status as subprocess reports it: negative for a signal, whether it timed out).
    """
    import select
    import signal

    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)  # Linux 5.3+: wakes select() when the child ends
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), False
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.02))
    finally:
        if pidfd is not None:
            os.close(pidfd)
    try:
        os.killpg(pid, signal.SIGKILL)  # not reaped yet, so the group id is still the child's
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), True


if __name__ == "__main__":
    main()
