"""The native walk: C++ shipped as source, built at first use, with the Python fallback.

Five walks: `read.cc` reads a global function for the dependency view (graph.py),
`naming.cc` plans the names (naming.py), and for annotate does so along with the read of
the entry function, in one walk (`read_and_name`, through `read.h`: joint_read.py),
`rebuild.cc` writes span markers (rewrite.py), `prune.cc` rebuilds a pruned function
(prune_rebuild.py), `ties.cc` finds the channel ties (channel_native.py); all include
`common.h`. They
are compiled in three groups (UNITS), as many at once as there are cores, with plain
`c++` commands against tvm-ffi's shipped headers and `libtvm_ffi.so` (no ninja, no TVM
headers), then linked into one library in a cache
folder per (msc_rules, tvm, tvm-ffi) version and hash of the sources and flags:
`$MSC_RULES_CACHE`, else `$XDG_CACHE_HOME/msc_rules`, else `~/.cache/msc_rules`. `$CXX`
picks the compiler. Stale folders of other versions are removed at load (see cache.py).

`MSC_RULES_NATIVE` chooses the path, read on every call: `0` the Python walk, `1` the
native one (a build failure raises `NativeBuildError`), unset: native if it builds, else
the Python walk after one notice line on stderr.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from ..errors import MscRulesError, NativeBuildError
from . import cache

UNITS = (("naming", "prune"), ("rebuild", "read"), ("ties",))
"""The sources compiled together, one compiler per group (each includes its sources:
tvm-ffi's headers parsed and its templates made once per group, not once per source),
the longest to compile first. Sources in one group share a translation unit, and so
their anonymous namespaces: no two may define the same name."""
SOURCES = tuple(Path(__file__).with_name(f"{n}.cc") for group in UNITS for n in group)
"""The sources of the library (all include `common.h`): the naming walk, the typed
rebuild of a prune, the marker rebuild, the read of the dependency view, the channel
ties walk."""
HEADER = Path(__file__).with_name("common.h")
HEADERS = (HEADER, Path(__file__).with_name("read.h"))
"""The headers the sources include (part of the cache key)."""
FLAGS = ("-std=c++17", "-O1", "-fPIC")
"""Compiler flags (part of the cache key). -O1, not -O2: the same instructions per
binding of annotate (95.6k against 95.5k, count_instructions.py) for a first-use build
in about two thirds of the time on two cores (the Python around the walks dominates)."""

VERSION = 4
"""The interface version `rebuild.cc` reports (its `version()`): checked at load."""

_T = TypeVar("_T")

_lock = threading.Lock()
_module: Any = None
_failure: str | None = None
_noticed = False
_held: IO[bytes] | None = None  # the shared lock on the cache folder in use
build_seconds: float | None = None
"""Wall time of the build this process made (None if it loaded a cached library)."""


def mode() -> str:
    """The path MSC_RULES_NATIVE asks for: "0", "1" or "" (unset: native if it builds)."""
    value = os.environ.get("MSC_RULES_NATIVE", "").strip()
    if value not in ("", "0", "1"):
        raise MscRulesError(f"MSC_RULES_NATIVE must be 0, 1 or unset, not {value!r}")
    return value


def cache_dir() -> Path:
    """The folder of the built library for these versions of msc_rules, tvm, tvm-ffi
    and this source."""
    return cache.folder_for(b"".join([*(p.read_bytes() for p in (*SOURCES, *HEADERS)),
                                      " ".join(FLAGS).encode()]))


def _first_error(done: Any) -> str:
    lines = (done.stderr or done.stdout or "").strip().splitlines()
    # the first error, not the "In function ..." context before it
    return next((x for x in lines if "error" in x), lines[0] if lines else "")


def _workers() -> int:
    """The compiler jobs to run at once: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # (not on Linux)
        return max(1, os.cpu_count() or 1)


def _compile(out: Path) -> None:
    """Compile the groups of sources (UNITS) to objects, as many at once as there are
    cores, then link them into `out`. (The five sources each alone and all at once took
    11-13 s on two cores, the compilers' memory thrashing; two at a time 8; the groups
    two at a time 6.5.)"""
    import tvm_ffi.libinfo as libinfo

    lib = Path(libinfo.find_libtvm_ffi())
    includes = dict.fromkeys((libinfo.find_include_path(), libinfo.find_dlpack_include_path()))
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        units = [Path(tmp) / f"{'_'.join(group)}.cc" for group in UNITS]
        for unit, group in zip(units, UNITS, strict=True):
            unit.write_text("".join(f'#include "{here / name}.cc"\n' for name in group))

        def compile_one(unit: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cxx, *FLAGS, *(f"-I{p}" for p in includes), "-c",
                                   str(unit), "-o", str(unit.with_suffix(".o"))],
                                  capture_output=True, text=True, timeout=600, check=False)

        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            runs = list(pool.map(compile_one, units))
        for group, run in zip(UNITS, runs, strict=True):
            if run.returncode != 0:
                names = ", ".join(f"{name}.cc" for name in group)
                raise NativeBuildError(
                    f"compiling {names} failed: {_first_error(run) or run.returncode}")
        objects = [str(unit.with_suffix(".o")) for unit in units]
        done = subprocess.run([*cxx, "-shared", *objects, "-o", str(out), f"-L{lib.parent}",
                               "-ltvm_ffi", f"-Wl,-rpath,{lib.parent}"],
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise NativeBuildError(
                f"linking the native walk failed: {_first_error(done) or done.returncode}")


def _build() -> Any:
    global build_seconds
    import tvm_ffi

    global _held
    folder = cache_dir()
    target = folder / cache.LIBRARY
    try:
        # held for the life of the process: a pruner (cache.prune) never removes it
        _held = cache.use(folder)
    except OSError as err:
        raise NativeBuildError(f"cannot write the cache folder {folder}: {err}") from None
    if not target.exists():
        try:
            # built under a temporary name and renamed: a process that races us, or one
            # killed mid-build, never leaves a half-written library under the real name
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
            os.close(fd)
        except OSError as err:
            raise NativeBuildError(f"cannot write the cache folder {folder}: {err}") from None
        start = time.perf_counter()
        try:
            _compile(Path(tmp))
            os.replace(tmp, target)
        except (OSError, subprocess.SubprocessError) as err:
            raise NativeBuildError(f"cannot run the C++ compiler: {err}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        build_seconds = time.perf_counter() - start
    try:
        module = tvm_ffi.load_module(str(target))
        if module.version() != VERSION:
            raise NativeBuildError(f"{target} is not this version of the native walk")
        # Keep the GIL during a rebuild: it interns span text in TVM's global SourceName
        # table, which the Python rebuild only ever reaches with the GIL held, so two
        # threads' passes never touch it at once either way.
        module.rebuild.release_gil = False
        # the naming walk calls back into Python (naming.py's class tags and rules)
        module.plan_names.release_gil = False
        module.read_and_name.release_gil = False
        module.prune_rebuild.release_gil = False
    except NativeBuildError:
        raise
    except Exception as err:  # a library from a broken build or another ABI
        raise NativeBuildError(f"cannot load {target}: {err}") from None
    cache.prune(folder)
    return module


def load() -> Any:
    """The native module (built if needed); raises NativeBuildError if it cannot be had."""
    global _module, _failure
    with _lock:
        if _module is not None:
            return _module
        if _failure is not None:
            raise NativeBuildError(_failure)
        try:
            _module = _build()
        except NativeBuildError as err:
            _failure = str(err)
            raise
        return _module


REFUSALS_KEPT = 100
"""The entries each log of refusals keeps (the last ones: a long session's never pile up)."""


def refusal(err: BaseException | str) -> str:
    """Why the native walk refused something, for a log of refusals: the first line of
    its error (the error's repr when it has no text)."""
    text = err if isinstance(err, str) else str(err) or repr(err)
    return (text.splitlines() or [""])[0]


def note_refusal(log: list[_T], entry: _T) -> None:
    """Add `entry` to a log of what a native walk refused and Python did instead (each
    module that falls back keeps one: `fallbacks`), which keeps the last REFUSALS_KEPT."""
    log.append(entry)
    del log[:-REFUSALS_KEPT]


def get() -> Any:
    """The native module to use now, or None for the Python walk (see MSC_RULES_NATIVE)."""
    global _noticed
    wanted = mode()
    if wanted == "0":
        return None
    if wanted == "1":
        return load()
    try:
        return load()
    except NativeBuildError as err:
        if not _noticed:
            _noticed = True
            print(f"msc_rules: using the Python walk ({err})", file=sys.stderr)
        return None


__all__ = ["FLAGS", "HEADER", "HEADERS", "REFUSALS_KEPT", "SOURCES", "UNITS", "VERSION",
           "NativeBuildError", "build_seconds", "cache_dir", "get", "load", "mode",
           "note_refusal", "refusal"]
