"""Running generated code without trusting it: one fresh process per program, unprivileged, limited.

Each program runs in a new interpreter started by a clean launcher (`sandbox_launch.py`), never forked
from the evaluating one: inside network, mount, pid and IPC namespaces where the kernel allows (a
private root holding only read-only system folders, the interpreter and a fresh tmpfs folder), as an
unprivileged uid (nobody, when we are root), under rlimits on CPU time, memory, processes, file size
and open files, with a minimal environment and a wall-clock deadline, and everything it started is
killed at the end. SECURITY.md says what this does and does not protect against.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache
from pathlib import Path

UNSAFE_FLAG = "--allow-unsafe-code"
LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
HOME = "/sandbox"  # the program's folder as it sees it inside the private root
MAIN = "main.py"
FILE_SIZE_MB = 4
FOLDER = "size=16m,nr_inodes=1024"  # the tmpfs folder: writes are bounded and never reach the disk
OPEN_FILES = 64
EXTRA_PROCESSES = 32
SETUP_GRACE_S = 5.0  # the launcher keeps the deadline; the evaluator's backstop waits this much longer
DETAIL_CHARS = 400
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache")
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


@dataclass(frozen=True)
class Isolation:
    """What this machine allows, detected once (`detect_isolation`)."""

    drop_user: bool  # the program runs as an unprivileged uid (nobody from root; a normal user already is)
    namespaces: bool  # network, mount, pid and IPC namespaces with a private root
    description: str  # one line for logs and the CLI


@dataclass(frozen=True)
class ExecResult:
    """How one program ended: `passed` is exit status 0 within the limits."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "killed" (by a signal: a resource limit) | "error" (the sandbox)
    detail: str  # the tail of its stderr, or what went wrong
    elapsed_s: float


class SandboxUnavailable(RuntimeError):
    """Neither a privilege drop nor namespaces: generated code would run with our own rights."""


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _is_root() -> bool:
    return os.geteuid() == 0


def _usable_by_others(path: str) -> bool:
    """Every folder above `path` can be passed through and the file read by any user."""
    try:
        if not os.stat(path).st_mode & 0o005 == 0o005:
            return False
        parent = os.path.dirname(path)
        while parent != os.path.dirname(parent):
            if not os.stat(parent).st_mode & 0o001:
                return False
            parent = os.path.dirname(parent)
    except OSError:
        return False
    return True


def _python(iso: Isolation) -> str:
    """The interpreter the program can see: ours, unless it lives where the unprivileged uid cannot reach."""
    ours = os.path.realpath(sys.executable)
    if iso.namespaces or not (iso.drop_user and _is_root()):
        return ours
    stdlib = os.path.join(os.path.realpath(os.path.dirname(os.__file__)), "os.py")
    if _usable_by_others(ours) and _usable_by_others(stdlib):
        return ours
    for candidate in SYSTEM_PYTHONS:
        if _usable_by_others(os.path.realpath(candidate)):
            return os.path.realpath(candidate)
    return ours  # the probe in detect_isolation will see it fail


def _binds(python: str) -> list[str]:
    """The host paths the private root shows read-only: system folders, the interpreter and its prefixes."""
    paths = {os.path.dirname(python)}
    paths |= {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    if python.startswith(os.path.realpath(sys.prefix) + os.sep):  # a venv made with --copies needs its pyvenv.cfg
        paths.add(os.path.realpath(sys.prefix))
    outer = [p for p in paths if not any(p.startswith(q + os.sep) for q in [*paths, *SYSTEM])]
    return list(SYSTEM) + sorted(outer)


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def _flags() -> list[str]:
    # What -I means, without -E: the environment is entirely ours and carries PYTHONHASHSEED.
    return ["-s", "-B"] + (["-P"] if sys.version_info >= (3, 11) else [])


def _config(iso: Isolation, folder: Path, timeout_s: float, memory_mb: int, status_fd: int) -> dict:
    uid, gid = _nobody() if iso.drop_user and _is_root() else (None, None)
    cwd = HOME if iso.namespaces else str(folder / "work")
    python = _python(iso)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": cwd, "TMPDIR": cwd, "PYTHONHASHSEED": "0",
           "PYTHONIOENCODING": "utf-8"}
    return {
        "namespaces": iso.namespaces, "root": str(folder / "root"), "binds": _binds(python), "cwd": cwd,
        "folder": FOLDER, "program": str(folder / ("source.py" if iso.namespaces else f"work/{MAIN}")),
        "main": MAIN, "uid": uid, "gid": gid, "drop_caps": uid is None and (iso.namespaces or _is_root()),
        "python": python, "flags": _flags(), "env": env, "timeout": timeout_s, "status_fd": status_fd,
        "limits": {"cpu": int(timeout_s) + 1, "as": memory_mb << 20, "fsize": FILE_SIZE_MB << 20,
                   "nofile": OPEN_FILES, "nproc": _processes_of(os.getuid() if uid is None else uid) + EXTRA_PROCESSES},
    }


def _command(iso: Isolation, config: dict) -> list[str]:
    launch = [os.path.realpath(sys.executable), "-I", "-S", str(LAUNCHER), json.dumps(config)]
    if not iso.namespaces:
        return launch
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") or "unshare"
    user = [] if _is_root() else ["--map-root-user"]
    return [unshare, *user, "--net", "--mount", "--pid", "--ipc", "--uts", "--kill-child", "--", *launch]


def _prepare(iso: Isolation, source: str) -> Path:
    """A fresh folder: the program file, the mount point of the private root, and (without one) its cwd."""
    folder = Path(tempfile.mkdtemp(prefix="lab-sandbox-"))
    if iso.namespaces:
        (folder / "root").mkdir()
        (folder / "source.py").write_text(source, encoding="utf-8")
        return folder
    work = folder / "work"
    work.mkdir(mode=0o700)
    (work / MAIN).write_text(source, encoding="utf-8")
    if iso.drop_user and _is_root():
        uid, gid = _nobody()
        os.chmod(folder, 0o711)  # the dropped uid passes through to work/ but cannot list or read the rest
        for path in (work, work / MAIN):
            os.chown(path, uid, gid)
    return folder


def _remove(folder: Path) -> None:
    for root, dirs, _ in os.walk(folder):  # a program may have taken its own folders' permissions away
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o700)
            except OSError:
                pass
    shutil.rmtree(folder, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 4 * DETAIL_CHARS))
        return f.read().decode("utf-8", errors="replace")[-DETAIL_CHARS:].strip()


def _result(line: str, backstop: bool, timeout_s: float, stderr: str, elapsed: float) -> ExecResult:
    kind, _, value = line.partition(" ")
    if kind == "exit":
        code = int(value)
        return ExecResult(code == 0, "passed" if code == 0 else "failed", stderr, elapsed)
    if kind == "timeout" or backstop:
        return ExecResult(False, "timeout", f"timed out after {timeout_s:g} s. {stderr}".strip(), elapsed)
    if kind == "signal":
        number = int(value)
        name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        status = "timeout" if number == signal.SIGXCPU else "killed"
        return ExecResult(False, status, f"killed by {name}. {stderr}".strip(), elapsed)
    reason = value if kind == "error" else "the sandbox launcher ended without a status"
    return ExecResult(False, "error", f"sandbox error: {reason}. {stderr}".strip(), elapsed)


def run_program(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                isolation: Isolation | None = None) -> ExecResult:
    """Run one Python program in the sandbox; `isolation` defaults to `require_sandbox()`."""
    if not isinstance(source, str):
        raise TypeError(f"source must be the program's text (str), not {type(source).__name__}")
    if not timeout_s > 0 or memory_mb < 64:
        raise ValueError(f"timeout_s must be > 0 and memory_mb >= 64, not {timeout_s} and {memory_mb}")
    iso = isolation if isolation is not None else require_sandbox()
    folder = _prepare(iso, source)
    status_r, status_w = os.pipe()
    start = time.perf_counter()
    try:
        config = _config(iso, folder, timeout_s, memory_mb, status_w)
        with open(folder / "stderr", "wb") as err:
            proc = subprocess.Popen(_command(iso, config), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"},
                                    cwd=folder, pass_fds=(status_w,), start_new_session=True)
        os.close(status_w)
        status_w = -1
        # The launcher writes its one line and exits at once; the pipe also wakes us if it dies first.
        poll = select.poll()
        poll.register(status_r, select.POLLIN)
        ready = bool(poll.poll(1000 * (timeout_s + SETUP_GRACE_S)))
        _kill_group(proc.pid)  # a pid namespace dies with its first process; this catches the rest
        proc.wait()
        elapsed = time.perf_counter() - start
        line = os.read(status_r, 4096).decode(errors="replace").strip() if ready else ""
        return _result(line, not ready, timeout_s, _tail(folder / "stderr"), elapsed)
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)
        _remove(folder)


def run_programs(sources: Sequence[str], *, workers: int = 2, timeout_s: float = 10.0, memory_mb: int = 1024,
                 isolation: Isolation | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[ExecResult]:
    """Run many programs, `workers` at a time (threads that each wait on a child); results in input order."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    iso = isolation if isolation is not None else require_sandbox()
    results: list[ExecResult | None] = [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_program, s, timeout_s=timeout_s, memory_mb=memory_mb, isolation=iso): i
                   for i, s in enumerate(sources)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(done, len(sources))
    return results  # type: ignore[return-value]


def _failure(iso: Isolation) -> str:
    """Why this sandbox does not run here ("" when it does)."""
    if iso.namespaces and shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") is None:
        return "no unshare command (util-linux)"
    result = run_program("pass\n", timeout_s=10.0, memory_mb=512, isolation=iso)
    return "" if result.passed else (result.detail.splitlines() or [result.status])[-1][:160]


@cache
def detect_isolation() -> Isolation:
    """The strongest sandbox this machine runs, found by running a trivial program in each, strongest first."""
    who = f"uid {_nobody()[0]}" if _is_root() else "this unprivileged user"
    candidates = [
        Isolation(True, True, f"namespaces (network, mount, pid, ipc) with a private root; as {who}; rlimits"),
        Isolation(True, False, f"as {who} with rlimits, without namespaces: the network and every file "
                               f"readable by {who} stay within reach"),
    ]
    if _is_root():
        candidates.insert(1, Isolation(False, True, "namespaces (network, mount, pid, ipc) with a private "
                                                    "root, but as root without capabilities; rlimits"))
    reasons = []
    for iso in candidates:
        reason = _failure(iso)
        if not reason:
            why = f" (no namespaces: {reasons[0]})" if reasons and not iso.namespaces else ""
            return Isolation(iso.drop_user, iso.namespaces, iso.description + why)
        reasons.append(reason)
    return Isolation(False, False, f"no sandbox: neither a privilege drop nor namespaces work here ({reasons[0]})")


def require_sandbox(allow_unsafe: bool = False) -> Isolation:
    """The detected isolation; SandboxUnavailable when there is none, unless the user accepted the risk."""
    iso = detect_isolation()
    if iso.drop_user or iso.namespaces:
        return iso
    if not allow_unsafe:
        raise SandboxUnavailable(
            "generated code cannot be sandboxed here: no unprivileged uid to run it as and no namespaces "
            "(unshare --net --mount --pid). Run as root or where user namespaces are allowed, or pass "
            f"{UNSAFE_FLAG} to run it with your own rights under rlimits only, accepting the risk.")
    return Isolation(False, False, f"UNSAFE ({UNSAFE_FLAG}): generated code runs with your own rights, "
                                   "under rlimits only, with the network and your files in reach")
