"""Run one container from a plan, with Linux namespaces instead of a container engine.

    python -m devtools.twin.launcher PLAN.json    (as root, by ``devtools.twin.container``)

What happens, in the order Docker/Fargate does it:

1. This process joins the task's network namespace (its awsvpc interface), enters new mount, PID
   and UTS namespaces and forks the container's PID 1.
   It stays outside, as the engine does: it forwards the signals it gets to PID 1 and exits with
   the container's exit code (128 + signal when PID 1 was killed; 137 after a SIGKILL).
2. PID 1, still root, assembles the root filesystem on a fresh tmpfs (the container's writable
   layer): the plan's read-only binds (the image's files), ``/etc/passwd`` with the image's user,
   a Docker-like ``/dev`` with a 64 MiB ``/dev/shm``, ``/proc`` of the new PID namespace, and each
   volume; then remounts the root read-only when ``readonlyRootFilesystem`` is set.
3. PID 1 enters the root (``chroot``) and the working directory and execs the plan's
   ``privileges`` (``setpriv``: the container's user, no supplementary groups, the dropped
   capabilities removed from the bounding and inheritable sets), then, with
   ``initProcessEnabled``, ``tini`` (what ``docker --init`` runs) with the command as its child,
   else the command itself as PID 1.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

#: Signals the engine and the init pass on (all that can be caught and make sense to forward).
FORWARDED = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
)  # fmt: skip
#: Docker's device nodes, bound from the host (``/dev`` itself is a fresh tmpfs).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}
SHM_SIZE = "64m"  # Docker's default for /dev/shm

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def enter_network(namespace: str) -> None:
    """Join the task's network namespace (``/run/netns/<name>``, set up by the twin)."""
    fd = os.open(namespace, os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {namespace}")
    finally:
        os.close(fd)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def bind(source: str, target: str, *, read_only: bool) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:  # a bind mount becomes read-only only by remounting it
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def sethostname(name: str) -> None:
    encoded = name.encode()
    _check(_libc.sethostname(encoded, len(encoded)), "sethostname")


def _inside(rootfs: Path, path: str) -> Path:
    return rootfs / path.lstrip("/")


def _mount_target(source: str, target: Path) -> None:
    """Create ``target`` as a file or a directory to mount ``source`` on, unless it exists (it
    may be inside an earlier read-only bind, e.g. ``/etc/passwd``)."""
    if target.exists():
        return
    if os.path.isdir(source):
        target.mkdir(parents=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def build_rootfs(plan: dict[str, Any]) -> Path:
    """Assemble the container's root filesystem (we are PID 1, root, in the new namespaces)."""
    rootfs = Path(plan["rootfs"])
    # Nothing mounted here leaks to the host, nothing of the host's later mounts leaks in.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("rootfs", str(rootfs), "tmpfs", MS_NOSUID, "mode=0755")
    for path, mode in plan["directories"]:
        directory = _inside(rootfs, path)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, int(mode, 8))
    for path, target in plan["symlinks"]:
        _inside(rootfs, path).symlink_to(target)
    for source, path, read_only in plan["binds"]:
        target = _inside(rootfs, path)
        _mount_target(source, target)
        bind(source, str(target), read_only=read_only)

    dev = _inside(rootfs, "/dev")
    dev.mkdir(exist_ok=True)
    mount("tmpfs", str(dev), "tmpfs", MS_NOSUID, "mode=0755")
    for device in DEVICES:
        (dev / device).touch()
        bind(f"/dev/{device}", str(dev / device), read_only=False)
    for name, target in DEV_LINKS.items():
        (dev / name).symlink_to(target)
    (dev / "pts").mkdir()
    (dev / "shm").mkdir()
    mount("shm", str(dev / "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          f"mode=1777,size={SHM_SIZE}")  # fmt: skip
    proc = _inside(rootfs, "/proc")
    proc.mkdir(exist_ok=True)
    mount("proc", str(proc), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)

    for source, path, read_only in plan["volumes"]:
        target = _inside(rootfs, path)
        target.mkdir(parents=True, exist_ok=True)
        bind(source, str(target), read_only=read_only)
    if plan["read_only_root"]:
        mount(None, str(rootfs), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)
    return rootfs


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def hold_signals() -> None:
    """Keep forwarded signals pending until there is someone to forward them to (a signal sent
    between the fork and ``forward_signals_to`` must not be lost or end this process)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)


def forward_signals_to(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return  # already gone: nothing to tell it

    for signum in FORWARDED:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)


def run_container(plan: dict[str, Any]) -> None:
    """PID 1 of the container: build the root, then become the init or the command."""
    try:
        sethostname(plan["hostname"])
        rootfs = build_rootfs(plan)
        os.chroot(rootfs)
        os.chdir(plan["workdir"])
        # The init (ECS's initProcessEnabled is docker --init, i.e. tini) runs with the same
        # user and capabilities as the command, as it does under Docker.
        command = ["/usr/bin/tini", "--", *plan["argv"]] if plan["init"] else plan["argv"]
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # a mask survives exec: clear it
        os.execve("/usr/bin/setpriv", [*plan["privileges"], "--", *command], plan["env"])
    except OSError as error:
        print(f"twin: cannot start the container: {error}", file=sys.stderr, flush=True)
        os._exit(125)  # Docker's "the engine failed" code


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text())
    if plan["network_namespace"]:
        enter_network(plan["network_namespace"])
    unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS)
    hold_signals()  # inherited by PID 1, which forwards them once the application exists
    init = os.fork()  # PID 1 of the new PID namespace
    if init == 0:
        run_container(plan)
    Path(plan["state_dir"], "init.pid").write_text(str(init))
    forward_signals_to(init)
    while True:
        try:
            _, status = os.waitpid(init, 0)
        except InterruptedError:
            continue
        return exit_code(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
