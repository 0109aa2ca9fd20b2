"""A run folder's lifecycle: ``status.json`` (running, finished, interrupted, failed; the step
reached; the process that wrote it), ``run.json`` (the command lines, package versions, host), and
what a folder holds (:func:`folder_state`), which decides whether a new run may replace it."""

from __future__ import annotations

import json
from pathlib import Path

STATUS_FILE = "status.json"  # running | finished | interrupted | failed, with the step reached
RESUME_FILE = "resume.npz"  # the whole run state while it runs (removed when it finishes)
RUN_FILE = "run.json"  # the command line(s), package versions, host
PACKAGES = (
    "lktd_ppl",
    "jax",
    "jaxlib",
    "numpy",
    "flax",
    "optax",
    "blackjax",
    "numpyro",
    "flashbax",
    "rlax",
    "gymnax",
    "gymnasium",
)


def package_versions() -> dict[str, str | None]:
    """Python's and the installed version of every package a run's results depend on."""
    import platform
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_status(folder: str | Path) -> dict:
    """``status.json`` of a run folder ({} if it has none or it is unreadable)."""
    try:
        return json.loads((Path(folder) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_status(folder: Path, state: str, step: int | None = None, message: str = "") -> None:
    """``status.json``: ``state`` (running, finished, interrupted, failed), the step reached,
    a message, and the process and host that wrote it; written atomically."""
    import os
    import socket
    import time

    from lktd_ppl.checkpoint import write_atomic

    status = {
        "state": state,
        "step": step,
        "message": message,
        "resumable": (folder / RESUME_FILE).is_file() and state != "finished",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if state == "running":
        status["message"] = message or f"a run is in progress (pid {os.getpid()})"
    write_atomic(folder / STATUS_FILE, lambda f: f.write(json.dumps(status, indent=1) + "\n"), "w")


def _alive(status: dict) -> bool:
    """Whether the process that wrote ``status`` runs still (on this host)."""
    import os
    import socket

    pid = status.get("pid")
    if status.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def folder_state(folder: str | Path) -> str:
    """What ``folder`` holds: ``absent``, ``empty``, ``finished``, ``in progress`` (a live
    process writes it), ``interrupted``, ``failed``, or ``other`` (not a run folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return "absent"
    if not any(folder.iterdir()):
        return "empty"
    status = read_status(folder)
    state = status.get("state")
    if state == "running":
        return "in progress" if _alive(status) else "interrupted"  # killed
    if state in ("finished", "interrupted", "failed"):
        return state
    if (folder / "config.json").is_file():  # a folder written before status files
        return "finished" if (folder / "summary.md").is_file() else "failed"
    return "other"


def record_command(folder: Path, command: str | None, resumed: bool) -> None:
    """``run.json``: the command line that started the run (and each that resumed it), the
    package versions and the host."""
    import socket
    import time

    path = folder / RUN_FILE
    record = {"command": command, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    record["host"] = socket.gethostname()
    record["versions"] = package_versions()
    if resumed and path.is_file():
        run = json.loads(path.read_text())
        run.setdefault("resumed", []).append(record)
    else:
        run = record
    path.write_text(json.dumps(run, indent=1) + "\n")
