"""The sandbox's launcher: enters a private root, drops privileges, and runs one program under limits.

A script, never imported: `lab/evals/sandbox.py` starts it as `python -I -S sandbox_launch.py CONFIG`
(a fresh interpreter, standard library only), inside new namespaces where the machine allows. It
reports one line on the status descriptor: "exit N", "signal N", "timeout" or "error MESSAGE".
"""

import ctypes
import json
import os
import platform
import resource
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_STRICTATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 24
ST_NOEXEC, ST_NOATIME, ST_NODIRATIME, ST_RELATIME = 8, 1024, 2048, 4096
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 24, 28, 36, 38
# SECBIT_NOROOT and SECBIT_NO_CAP_AMBIENT_RAISE, each with its lock: uid 0 gains no capabilities on exec.
SECURE_NOROOT = 0b11000011
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
DEVICES = ("null", "zero", "full", "random", "urandom")
OLD_ROOT = "/.old-root"

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _locked_flags(path: str) -> int:
    """The flags a read-only remount must keep: a user namespace may not clear them (mount_namespaces(7))."""
    f = os.statvfs(path).f_flag
    flags = MS_NOEXEC if f & ST_NOEXEC else 0
    flags |= MS_NODIRATIME if f & ST_NODIRATIME else 0
    if f & ST_NOATIME:
        return flags | MS_NOATIME
    return flags if f & ST_RELATIME else flags | MS_STRICTATIME


def _expose(new_root: str, path: str, devices: bool = False) -> None:
    """Make the host's `path` visible read-only at the same place under `new_root`."""
    target = new_root + path
    if os.path.islink(path):  # merged /usr: /lib -> usr/lib, and the loader's /lib64 path
        if not os.path.lexists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(path, target, None, MS_BIND)
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | _locked_flags(path)
    _mount(None, target, None, flags if devices else flags | MS_NODEV)


def enter_private_root(cfg: dict, source: bytes) -> None:
    """Build a root of read-only system folders plus a fresh tmpfs folder, pivot into it, forget the old one."""
    new = cfg["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in cfg["binds"]:
        if os.path.lexists(path):
            _expose(new, path)
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _expose(new, f"/dev/{name}", devices=True)
    home = new + cfg["cwd"]
    os.makedirs(home)
    owner = f",uid={cfg['uid']},gid={cfg['gid']}" if cfg["uid"] is not None else ""
    _mount("tmpfs", home, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,{cfg['folder']}{owner}")
    with open(os.path.join(home, cfg["main"]), "wb") as f:
        f.write(source)
    os.mkdir(new + OLD_ROOT)
    _mount(None, new, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    nr = PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(f"pivot_root: no system call number known for {platform.machine()}")
    os.chdir(new)
    _check(libc.syscall(ctypes.c_long(nr), b".", OLD_ROOT[1:].encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(OLD_ROOT.encode(), MNT_DETACH), "umount old root")


def drop_privileges(cfg: dict) -> None:
    """Become the unprivileged uid (from root), or else lose every capability that uid 0 would keep."""
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    elif cfg["drop_caps"]:  # root of a user namespace, or root with no uid to drop to
        _check(libc.prctl(PR_SET_SECUREBITS, SECURE_NOROOT, 0, 0, 0), "securebits")
        cap = 0
        while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
            cap += 1
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def run_child(cfg: dict) -> int:
    """Fork the program under its rlimits; return its pid once exec has succeeded."""
    report_r, report_w = os.pipe()  # close-on-exec: EOF means the exec went through
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_r)
            lim = cfg["limits"]
            resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
            resource.setrlimit(resource.RLIMIT_AS, (lim["as"], lim["as"]))
            resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.execve(cfg["python"], [cfg["python"], *cfg["flags"], cfg["main"]], cfg["env"])
        except BaseException as e:
            os.write(report_w, f"{type(e).__name__}: {e}".encode())
        os._exit(127)
    os.close(report_w)
    failure = os.read(report_r, 1000)
    if failure:
        raise OSError(f"starting the program: {failure.decode(errors='replace')}")
    return pid


def _children() -> list[int]:
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[1]) == me:
                    found.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def kill_descendants() -> None:
    """Without a pid namespace: whatever the program left (even in a new session) comes back to us, a
    subreaper, as it is orphaned; kill and reap until nothing is left."""
    while True:
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class _Deadline(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Deadline


def main(cfg: dict) -> str:
    """Set everything up, run the program, and say how it ended."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    with open(cfg["program"], "rb") as f:
        source = f.read()
    if cfg["namespaces"]:
        enter_private_root(cfg, source)
    os.chdir(cfg["cwd"])
    drop_privileges(cfg)
    pid = run_child(cfg)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, cfg["timeout"])
    try:
        _, status = os.waitpid(pid, 0)
    except _Deadline:
        status = None
    signal.setitimer(signal.ITIMER_REAL, 0)
    if not cfg["namespaces"]:  # in a pid namespace everything dies with us
        kill_descendants()
    if status is None:
        return "timeout"
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    fd = config["status_fd"]
    os.set_inheritable(fd, False)
    try:
        line = main(config)
    except BaseException as e:  # the evaluator records it as a sandbox error, never as a program failure
        line = f"error {type(e).__name__}: {e}".replace("\n", " ")
    os.write(fd, line.encode() + b"\n")
    os._exit(0)
