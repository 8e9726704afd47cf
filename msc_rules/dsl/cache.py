"""The on-disk cache of parsed rule files: one pickled AST per (file text, path, grammar).

Entries live in `ast/` under the cache root (`$MSC_RULES_CACHE_DIR`, else the native
library's root: `$MSC_RULES_CACHE`, `$XDG_CACHE_HOME/msc_rules`, `~/.cache/msc_rules`).
A hit touches its entry, so an entry's mtime is its last use; whenever a new entry is
written (a rule file changed, or one was seen for the first time) the entries unused
for `STALE_AFTER` seconds go, so files that come and go (rule files written to temporary
folders, every edit of a rule file under development) do not pile up.
`MSC_RULES_NO_CACHE=1` turns the cache off.
"""

from __future__ import annotations

import os
import pickle
import re
import time
from pathlib import Path

from . import ast

STALE_AFTER = 30 * 24 * 3600.0
"""Seconds since its last use after which an entry is removed."""

_ENTRY = re.compile(r"[0-9a-f]{40}\.pickle|[0-9a-f]{40}\.\d+\.tmp")


def folder() -> Path | None:
    """The folder of the AST cache (None when MSC_RULES_NO_CACHE is set)."""
    if os.environ.get("MSC_RULES_NO_CACHE"):
        return None
    base = os.environ.get("MSC_RULES_CACHE_DIR")
    if base:
        return Path(base)
    from ..native.cache import root

    return root() / "ast"


def load(where: Path, key: str) -> ast.RuleFile | None:
    """The cached AST under `key`, or None (missing, unreadable or from another version)."""
    entry = where / f"{key}.pickle"
    try:
        with entry.open("rb") as fh:
            cached = pickle.load(fh)
        if not isinstance(cached, ast.RuleFile):
            return None
        os.utime(entry)  # its last use, for prune
        return cached
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None


def store(where: Path, key: str, rf: ast.RuleFile) -> None:
    """Cache `rf` under `key`, then remove stale entries (a read-only folder is fine:
    nothing is cached)."""
    entry = where / f"{key}.pickle"
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump(rf, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
    except OSError:
        return
    prune(where)
    if where.name == "ast":  # entries of versions that kept them in the root itself
        prune(where.parent)


def prune(where: Path, now: float | None = None) -> int:
    """Remove the entries of `where` unused for STALE_AFTER seconds (and temporary files
    of writers killed as long ago); only files named like ours are touched. Returns how
    many went. Never raises for a file system error."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(where))
    except OSError:
        return 0
    for e in entries:
        try:
            if (_ENTRY.fullmatch(e.name) and e.is_file(follow_symlinks=False)
                    and now - e.stat(follow_symlinks=False).st_mtime > STALE_AFTER):
                os.unlink(e.path)
                removed += 1
        except OSError:
            continue
    return removed


__all__ = ["STALE_AFTER", "folder", "load", "prune", "store"]
