"""The cache folders of the native library: where they are, which one a process uses,
and the removal of stale ones.

A folder per (msc_rules, tvm, tvm-ffi) version and source hash holds the library
(`msc_rules_native.so`), the temporary files of builds in progress (`tmp*.so`) and a
`lock` file. A process that uses a folder, to build or to load, holds a shared `flock`
on its lock file for the rest of its life and touches it (its mtime is the folder's
last use). A folder is stale when another folder is the one in use here, nobody holds
its lock, and it was last used more than `STALE_AFTER` seconds ago: two installs of
different versions sharing one cache keep their folders while both are in use.

Removal is race-safe: the pruner takes the lock exclusively (never waiting), renames
the folder out of the way while holding it, then deletes the renamed copy. A process
that opened the lock file just before the rename finds, once it has its shared lock,
that the path no longer leads to the file it locked, and starts over in a fresh folder.
Only folders made by us are touched: named like ours and holding nothing but the
files above (a folder made before lock files existed qualifies, by its library's age).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # (not POSIX: no locks, so nothing is ever pruned)
    fcntl = None  # type: ignore[assignment]

LIBRARY = "msc_rules_native.so"
LOCK = "lock"
STALE_AFTER = 7 * 24 * 3600.0
"""Seconds since its last use after which an unlocked folder of another version goes."""
DEAD_BUILD_AFTER = 3600.0
"""Seconds after which a build's temporary file is left over from a killed build (a
build times out after 600 s)."""

_FOLDER = re.compile(r"native-.+-tvm.+-ffi.+-[0-9a-f]{16}")
_TRASH = ".native-trash-"
_OURS = re.compile(rf"{re.escape(LIBRARY)}|{LOCK}|tmp[A-Za-z0-9_]+\.so")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def root() -> Path:
    """The cache root: `$MSC_RULES_CACHE`, else `$XDG_CACHE_HOME/msc_rules`, else
    `~/.cache/msc_rules` (shared with the rule library's AST cache)."""
    got = os.environ.get("MSC_RULES_CACHE")
    if not got:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        got = os.path.join(xdg, "msc_rules")
    return Path(got)


def folder_for(source: bytes) -> Path:
    """The folder of the library built from `source` for these versions of msc_rules,
    tvm and tvm-ffi."""
    import tvm
    import tvm_ffi

    digest = hashlib.sha256(source).hexdigest()[:16]
    tag = (f"native-{_version('msc_rules')}-tvm{tvm.__version__}-"
           f"ffi{tvm_ffi.__version__}-{digest}")
    return root() / tag


def use(folder: Path) -> IO[bytes] | None:
    """Make `folder` (if needed) and hold a shared lock on it: the open lock file,
    to keep open while the folder is in use (None where there are no locks)."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return None
        path = folder / LOCK
        try:
            fh = open(path, "ab")  # noqa: SIM115 (held open for the process's life)
        except FileNotFoundError:
            continue  # pruned between mkdir and open: make it again
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.utime(path)  # the folder's last use
            return fh
        fh.close()  # the folder was pruned while we waited for the lock


def _last_use(folder: Path) -> float | None:
    """When `folder` was last used (None if it holds anything that is not ours)."""
    latest = 0.0
    for entry in os.scandir(folder):
        if not entry.is_file(follow_symlinks=False) or not _OURS.fullmatch(entry.name):
            return None
        latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
    return latest


def _remove_if_unused(folder: Path, now: float) -> bool:
    """Remove `folder` if it is ours, unlocked and unused for STALE_AFTER seconds."""
    last = _last_use(folder)
    if last is None or now - last < STALE_AFTER:
        return False
    lock = folder / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        os.utime(lock, (last, last))  # a folder from before lock files: ours is no use
    except FileExistsError:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # in use right now
        if _last_use(folder) != last:  # used between our first look and the lock
            return False
        trash = folder.with_name(f"{_TRASH}{uuid.uuid4().hex}")
        os.rename(folder, trash)
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def prune(current: Path, now: float | None = None) -> list[str]:
    """Remove the stale folders beside `current` (never `current`), what renamed
    folders a killed pruner left, and temporary files of killed builds in `current`.
    Returns the names of the folders removed. Never raises for a file system error:
    a folder that cannot be removed now is tried again by a later process."""
    if fcntl is None:
        return []
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = [e for e in os.scandir(current.parent)
                   if e.name.startswith(("native-", _TRASH))]
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        try:
            if not entry.is_dir(follow_symlinks=False) or path == current:
                continue
            if entry.name.startswith(_TRASH):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(entry.name)
            elif _FOLDER.fullmatch(entry.name) and _remove_if_unused(path, now):
                removed.append(entry.name)
        except OSError:
            continue
    try:
        for entry in os.scandir(current):
            if (entry.name.startswith("tmp") and _OURS.fullmatch(entry.name)
                    and now - entry.stat().st_mtime > DEAD_BUILD_AFTER):
                os.unlink(entry.path)
    except OSError:
        pass
    return removed


__all__ = ["DEAD_BUILD_AFTER", "LIBRARY", "LOCK", "STALE_AFTER", "folder_for", "prune",
           "root", "use"]
