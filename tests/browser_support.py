"""Helpers for tests/test_browser.py: a JupyterLab server on loopback and a headless Chromium.

The server runs the same Python as the tests, from a temporary folder, with its own Jupyter
config, data, runtime and settings folders, so that neither a user's Jupyter setup nor the
checkout is read or written. Its kernels get live widgets (``LABKIT_STATIC=0``) in fast mode.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Chromium reaches for the network (component updates, sync, QUIC probes) unless told not to,
# and stalls where there is none. Playwright gives each launch a fresh --user-data-dir itself.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio",
]

# JupyterLab settings that keep dialogs and pop-ups away and render every cell in the DOM
# (the default windowing would leave cells scrolled out of view unrendered).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def find_chromium() -> str | None:
    """The Chromium binary to drive: ``$LABKIT_CHROMIUM``, else the first of Debian's
    ``chromium`` and the usual other names on PATH; None when there is none."""
    explicit = os.environ.get("LABKIT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def artifacts_dir() -> Path:
    """Where screenshots go: ``$LABKIT_ARTIFACTS/browser``, else the checkout's git-ignored
    ``build/test-artifacts/browser``."""
    base = os.environ.get("LABKIT_ARTIFACTS")
    root = Path(base) if base else REPO / "build" / "test-artifacts"
    return root / "browser"


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             details: Callable[[], str] | None = None, interval: float = 0.5) -> Any:
    """Poll ``condition()`` until it returns something truthy and return that; after
    ``timeout`` seconds raise AssertionError saying what was awaited (and ``details()``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (kernels run in sessions of their own, out of its group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class LabServer:
    """A running JupyterLab: its base ``url``, ``token``, notebook folder and log file."""

    process: subprocess.Popen
    url: str
    token: str
    root_dir: Path
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return f"--- JupyterLab log (end) ---\n{text[-chars:]}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> Any:
        """The JSON answer of the server's REST API at ``path`` (e.g. ``/api/status``)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def lab_url(self, notebook: str) -> str:
        """The address that opens ``notebook`` (relative to the root folder) in JupyterLab, in
        a fresh workspace (``reset``: no tab of an earlier test is restored)."""
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """End every session and kernel, so that the next notebook has the CPU to itself."""
        try:
            for session in self.api("/api/sessions"):
                self.api(f"/api/sessions/{session['id']}", method="DELETE", timeout=30.0)
            for kernel in self.api("/api/kernels"):
                self.api(f"/api/kernels/{kernel['id']}", method="DELETE", timeout=30.0)
        except (urllib.error.URLError, OSError):
            pass  # the server is gone; _stop cleans up after it


def lab_environment(home: Path) -> dict[str, str]:
    """The server's (and so its kernels') environment: this one, with live widgets in fast mode,
    inline matplotlib, and Jupyter/IPython folders under ``home``."""
    env = dict(os.environ)
    # tests/conftest.py asks for static widgets and the Agg backend, for nbval; a person in
    # JupyterLab gets live widgets and inline figures, and so does this test.
    env.pop("MPLBACKEND", None)
    env.update({
        "LABKIT_STATIC": "0",  # wins over CI=true, which would otherwise mean static output
        "LABKIT_FAST": "1",
        "LABKIT_FIGURES_DIR": str(home / "figures"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    return env


@contextmanager
def jupyterlab(root_dir: Path, home: Path, start_timeout: float = 120.0) -> Iterator[LabServer]:
    """Run JupyterLab on 127.0.0.1 serving ``root_dir``, its state under ``home``; stop it (and
    every kernel it started) on exit, whatever happened."""
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    (home / "workspaces").mkdir(parents=True, exist_ok=True)
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}", f"--IdentityProvider.token={token}",
        "--ServerApp.allow_remote_access=False", "--ServerApp.terminals_enabled=False",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI and containers run as root
        command.append("--allow-root")
    log_path = home / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=root_dir, env=lab_environment(home), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = LabServer(process, f"http://127.0.0.1:{port}", token, root_dir, log_path)
    try:
        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"JupyterLab exited with code {process.returncode} while starting\n"
                    f"{server.log_tail()}"
                )
            try:
                server.api("/api/status", timeout=2.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                return False
            return True

        wait_for(up, start_timeout, f"JupyterLab to answer on {server.url}/api/status",
                 server.log_tail)
        yield server
    finally:
        _stop(server)


def _stop(server: LabServer) -> None:
    """Shut the server down: politely through its API (it stops its kernels), then by signal to
    its process group and to every process it started."""
    process = server.process
    below = _descendants(process.pid)
    if process.poll() is None:
        try:
            server.api("/api/shutdown", method="POST", timeout=5.0)
            process.wait(timeout=15)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            pass
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
    for pid in below:
        _kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------ in the page
# JavaScript run in JupyterLab's page (window.jupyterapp is there through
# --LabApp.expose_app_in_browser). Each takes the notebook's path.
JS_PANEL = """
(path) => {
    const app = window.jupyterapp;
    if (!app) return null;
    for (const w of app.shell.widgets('main')) {
        if (w.context && w.context.path === path) return w;
    }
    return null;
}
"""

JS_STATE = """
(path) => {
    const findPanel = FIND_PANEL;
    const panel = findPanel(path);
    if (!panel) return {open: false};
    const session = panel.sessionContext;
    const kernel = session.session ? session.session.kernel : null;
    const cells = panel.content.widgets.filter((c) => c.model.type === 'code');
    const errors = [];
    cells.forEach((cell, index) => {
        for (const out of cell.model.outputs.toJSON()) {
            if (out.output_type === 'error') {
                errors.push({cell: index, ename: out.ename, evalue: out.evalue,
                             traceback: (out.traceback || []).join('\\n')});
            }
        }
    });
    const prompts = Array.from(panel.node.querySelectorAll('.jp-InputPrompt'));
    const text = (selector) => Array.from(panel.node.querySelectorAll(selector))
        .map((n) => n.textContent);
    return {
        open: true,
        ready: panel.context.isReady && session.isReady && !!kernel,
        kernel: kernel ? kernel.status : null,
        counts: cells.map((c) => c.model.executionCount),
        running: prompts.filter((p) => p.textContent.includes('*')).length,
        errors: errors,
        audio: panel.node.querySelectorAll('.jp-OutputArea-output audio').length,
        // an ipywidgets Audio view is the <audio> element itself
        widgetAudio: panel.node.querySelectorAll('.jp-OutputArea-output audio.jupyter-widgets')
            .length,
        widgets: panel.node.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length,
        sliders: panel.node.querySelectorAll('.jp-OutputArea-output .widget-slider').length,
        loading: text('.jp-OutputArea-output').filter((t) => t.includes('Loading widget')).length,
        widgetErrors: text('.jp-OutputArea-output')
            .filter((t) => /Error (displaying|rendering) widget/.test(t)),
        height: Math.max(...Array.from(panel.node.querySelectorAll(
            '.jp-WindowedPanel-outer, .jp-Notebook')).map((n) => n.scrollHeight)),
    };
}
""".replace("FIND_PANEL", JS_PANEL.strip())

JS_ACTIVATE = """
(path) => {
    const panel = (FIND_PANEL)(path);
    window.jupyterapp.shell.activateById(panel.id);
    return panel.id;
}
""".replace("FIND_PANEL", JS_PANEL.strip())

JS_SCROLL = """
([path, top]) => {
    const panel = (FIND_PANEL)(path);
    for (const node of panel.node.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook')) {
        node.scrollTop = top;
    }
}
""".replace("FIND_PANEL", JS_PANEL.strip())

# What an explorer shows: the images (their sources) and the text of its Output widget.
JS_OUTPUT_SIGNATURE = """
(node) => {
    const out = node.querySelector('.widget-output');
    if (!out) return null;
    return {
        images: Array.from(out.querySelectorAll('img')).map((i) => i.src),
        text: out.innerText,
        errors: out.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
    };
}
"""
