"""Stale cache folders of the native library (msc_rules/native/cache.py) go, and
nothing else does: not the folder in use, not one another process holds, not one used
recently, not one holding a file we did not make, not other files of the cache root."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msc_rules import native
from msc_rules.native import cache

_OLD = time.time() - cache.STALE_AFTER - 3600


def _folder(root: Path, digest: str, files: tuple[str, ...] = (cache.LIBRARY,),
            mtime: float = _OLD) -> Path:
    folder = root / f"native-0.0.1-tvm0.1-ffi0.1-{digest}"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (mtime, mtime))
    return folder


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MSC_RULES_CACHE", str(tmp_path))
    return tmp_path


def test_only_stale_folders_of_ours_are_removed(root: Path) -> None:
    current = _folder(root, "0" * 16, mtime=_OLD)  # in use here, however old
    stale = _folder(root, "1" * 16)
    stale_locked = _folder(root, "2" * 16, (cache.LIBRARY, cache.LOCK))
    old_build = _folder(root, "3" * 16, ("tmpab_12.so",))  # a killed build's leftover
    recent = _folder(root, "4" * 16, mtime=time.time() - 60)
    foreign = _folder(root, "5" * 16, (cache.LIBRARY, "notes.txt"))
    (root / "native-not-ours").mkdir()
    (root / "ast.pickle").write_bytes(b"x")
    leftover = root / ".native-trash-0123"  # a pruner killed after its rename
    leftover.mkdir()
    removed = cache.prune(current)
    assert sorted(removed) == sorted([stale.name, stale_locked.name, old_build.name,
                                      leftover.name])
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted([current.name, recent.name, foreign.name, "native-not-ours",
                           "ast.pickle"])


def test_a_folder_another_process_holds_is_kept(root: Path) -> None:
    current = _folder(root, "0" * 16)
    held = _folder(root, "1" * 16, (cache.LIBRARY, cache.LOCK))
    # a shared lock on a second open file: what a process using the folder holds
    with open(held / cache.LOCK, "ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        os.utime(held / cache.LOCK, (_OLD, _OLD))  # last touched long ago
        assert cache.prune(current) == []
        assert held.is_dir()
    assert cache.prune(current) == [held.name]


def test_a_user_waiting_on_a_pruned_folder_starts_over(root: Path) -> None:
    folder = _folder(root, "6" * 16)
    first = cache.use(folder)
    assert first is not None
    first.close()
    os.utime(folder / cache.LOCK, (_OLD, _OLD))
    assert cache.prune(_folder(root, "7" * 16)) == [folder.name]
    again = cache.use(folder)  # a fresh folder under the same name
    assert again is not None
    assert (folder / cache.LOCK).exists() and not (folder / cache.LIBRARY).exists()
    again.close()


def test_dead_builds_in_the_current_folder_are_removed(root: Path) -> None:
    current = _folder(root, "0" * 16, (cache.LIBRARY, "tmpold1.so", "tmpnew1.so"))
    now = time.time()
    os.utime(current / "tmpnew1.so", (now, now))
    cache.prune(current)
    assert sorted(p.name for p in current.iterdir()) == [cache.LIBRARY, "tmpnew1.so"]


def test_loading_prunes_the_stale_folders(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh process loading the library (copied from this one's cache, so nothing
    is compiled) removes a stale folder beside it and keeps its own."""
    native.load()
    assert native._held is not None
    source = Path(native._held.name).parent
    monkeypatch.setenv("MSC_RULES_CACHE", str(tmp_path))
    current = native.cache_dir()
    assert current.parent == tmp_path
    current.mkdir()
    shutil.copy(source / cache.LIBRARY, current / cache.LIBRARY)
    stale = _folder(tmp_path, "1" * 16)
    env = {**os.environ, "MSC_RULES_NATIVE": "1"}
    subprocess.run([sys.executable, "-c", "from msc_rules import native; native.load()"],
                   check=True, env=env)
    assert not stale.exists()
    assert sorted(p.name for p in current.iterdir()) == [cache.LOCK, cache.LIBRARY]
