"""The system calls that confine a sandbox: prctl, unshare, rlimits, dropping privileges.

ctypes rather than a compiled module: these run once per sandbox parent or instance, and the
runtime must stay importable by any interpreter that runs the function.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import resource
import socket
import struct

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def set_no_new_privs() -> None:
    """Neither this process nor anything it executes can gain privileges (setuid binaries, caps)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (cleared by setuid, so call it afterwards)."""
    prctl(PR_SET_PDEATHSIG, 9)


def _loopback_up() -> None:
    # A fresh network namespace has only "lo", and it is down: 127.0.0.1 works once it is up.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))


def _map_ids_into_user_namespace(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def enter_private_network() -> str | None:
    """Move this process into a new network namespace with only a loopback interface.

    Returns None on success, else why it was not possible (the caller logs it and goes on).
    Without CAP_SYS_ADMIN, an unprivileged user namespace is tried (where the kernel allows it).
    """
    try:
        unshare(CLONE_NEWNET)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            return str(exc)
        uid, gid = os.getuid(), os.getgid()
        try:
            unshare(CLONE_NEWUSER | CLONE_NEWNET)
            _map_ids_into_user_namespace(uid, gid)
        except OSError as user_ns_exc:
            return f"{exc}; with a user namespace: {user_ns_exc}"
    try:
        _loopback_up()
    except OSError as exc:
        return f"loopback: {exc}"
    return None


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid with no supplementary groups (only when started as root)."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def set_limit(which: int, value: int) -> None:
    """Set soft and hard limit; never above an existing hard limit (that would fail)."""
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def address_space_in_use() -> int:
    """This process's current virtual size in bytes (the runtime's own mappings)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
CLONE_NEWNS = 0x00020000


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    result = _libc.mount(
        None if source is None else source.encode(),
        target.encode(),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )
    _check(result, f"mount {target}")


def _traversable(path: str, uid: int, gid: int) -> bool:
    info = os.stat(path)
    if info.st_uid == uid:
        return bool(info.st_mode & 0o100)
    if info.st_gid == gid:
        return bool(info.st_mode & 0o010)
    return bool(info.st_mode & 0o001)


def _first_closed_ancestor(path: str, uid: int, gid: int) -> str | None:
    current = "/"
    for part in path.strip("/").split("/"):
        if not _traversable(current, uid, gid):
            return current
        current = os.path.join(current, part)
    return None


def expose_paths(paths: list[str], uid: int, gid: int) -> list[str]:
    """Make ``paths`` reachable for uid/gid when a parent folder closes them off (say a Python
    installed under /root, mode 0700), without opening anything else of that folder.

    In a private mount namespace, each closed folder is covered by an empty tmpfs and only the
    needed paths are bind-mounted back into it: the rest of the folder (the operator's home,
    the gateway's config and secrets) is not even visible from the sandbox. Returns the folders
    covered. Needs CAP_SYS_ADMIN; call before dropping privileges.
    """
    closed: dict[str, list[str]] = {}
    for path in sorted({os.path.realpath(p) for p in paths}):
        ancestor = _first_closed_ancestor(path, uid, gid)
        if ancestor is not None:
            closed.setdefault(ancestor, []).append(path)
    if not closed:
        return []
    unshare(CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing done here reaches the host
    for folder, needed in sorted(closed.items()):
        # Hold the originals open: the tmpfs is about to hide them.
        handles = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in needed]
        _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for path, handle in handles:
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC, None)
            os.close(handle)
    return sorted(closed)
