"""Enter a pod's sandbox and exec its container: network namespace, private mounts, cgroup, workdir.

Run by the node agent as `python -S -I .../podexec.py [options] -- argv...` (standard library only);
it replaces itself with the container's program, so the pid the agent tracks is the container's.
"""

import argparse
import ctypes
import fcntl
import os
import sys
import termios
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RDONLY = 1
MS_REMOUNT = 32

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, flags: int) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, flags, None), f"mount {source} on {target}")


def join_network(netns_path: str) -> None:
    """Move the calling thread into the network namespace (only that thread: the kernel keeps one per
    thread, and sockets stay in the namespace they were made in)."""
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {netns_path}")
    finally:
        os.close(fd)


def enter(netns_path: str, binds: list[tuple[str, str, bool]], cgroups: list[str]) -> None:
    """Join the pod's network namespace, then a private mount namespace with the volumes bound in."""
    for cgroup in cgroups:
        (Path(cgroup) / "cgroup.procs").write_text(str(os.getpid()))
    join_network(netns_path)
    _check(_libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    _mount("none", "/", MS_REC | MS_PRIVATE)
    for source, target, read_only in binds:
        _mount(source, target, MS_BIND | MS_REC)
        if read_only:
            _mount(source, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _bind(text: str) -> tuple[str, str, bool]:
    source, target, mode = [*text.split(":"), "rw"][:3]
    return source, target, mode == "ro"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--bind", type=_bind, action="append", default=[], help="SOURCE:TARGET[:ro]")
    parser.add_argument("--cgroup", action="append", default=[])
    parser.add_argument("--workdir")
    parser.add_argument("--tty", action="store_true", help="make stdin, a terminal, the controlling one")
    parser.add_argument("--ready-fd", type=int, help="closed at exec: the container runs in its namespaces")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    enter(args.netns, args.bind, args.cgroup)
    if args.workdir:
        os.chdir(args.workdir)
    if args.tty:  # the runtime started us as a session leader: the terminal becomes its own
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if args.ready_fd is not None:
        os.set_inheritable(args.ready_fd, False)  # closed by exec, which the runtime waits for
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        print(f"podexec: cannot run {argv[0]!r}: {error.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
