"""The AST cache of rule files (msc_rules/dsl/cache.py): where it lives, hits, pruning."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from msc_rules.dsl import cache
from msc_rules.dsl.parse import parse_file

RULE = "op relax.my_relu(data) {\n    out  = data\n    data = out\n}\n"


def _rule_file(tmp_path: Path) -> Path:
    p = tmp_path / "mine.rules"
    p.write_text(RULE)
    return p


def test_default_folder_is_ast_under_the_cache_root(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.delenv("MSC_RULES_CACHE_DIR", raising=False)
    monkeypatch.delenv("MSC_RULES_NO_CACHE", raising=False)
    monkeypatch.setenv("MSC_RULES_CACHE", str(tmp_path))
    assert cache.folder() == tmp_path / "ast"
    monkeypatch.setenv("MSC_RULES_CACHE_DIR", str(tmp_path / "own"))
    assert cache.folder() == tmp_path / "own"
    monkeypatch.setenv("MSC_RULES_NO_CACHE", "1")
    assert cache.folder() is None


def test_a_parsed_file_is_cached_and_a_hit_marks_its_use(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    where = tmp_path / "c"
    monkeypatch.setenv("MSC_RULES_CACHE_DIR", str(where))
    monkeypatch.delenv("MSC_RULES_NO_CACHE", raising=False)
    src = _rule_file(tmp_path)
    first = parse_file(src)
    entries = list(where.glob("*.pickle"))
    assert len(entries) == 1
    old = time.time() - 1000
    os.utime(entries[0], (old, old))
    again = parse_file(src)
    assert again == first
    assert entries[0].stat().st_mtime > old + 500  # the hit touched it
    assert len(list(where.glob("*.pickle"))) == 1


def test_prune_removes_stale_entries_only(tmp_path: Path) -> None:
    now = time.time()
    stale = tmp_path / ("a" * 40 + ".pickle")
    fresh = tmp_path / ("b" * 40 + ".pickle")
    dead_tmp = tmp_path / ("c" * 40 + ".123.tmp")
    foreign = tmp_path / "notes.pickle"
    for p in (stale, fresh, dead_tmp, foreign):
        p.write_bytes(b"x")
    long_ago = now - cache.STALE_AFTER - 10
    for p in (stale, dead_tmp, foreign):
        os.utime(p, (long_ago, long_ago))
    assert cache.prune(tmp_path, now) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, foreign.name])


def test_writing_an_entry_prunes_its_folder_and_the_legacy_root(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MSC_RULES_CACHE_DIR", raising=False)
    monkeypatch.delenv("MSC_RULES_NO_CACHE", raising=False)
    monkeypatch.setenv("MSC_RULES_CACHE", str(tmp_path))
    (tmp_path / "ast").mkdir()
    legacy = tmp_path / ("d" * 40 + ".pickle")  # where earlier versions kept entries
    stale = tmp_path / "ast" / ("e" * 40 + ".pickle")
    long_ago = time.time() - cache.STALE_AFTER - 10
    for p in (legacy, stale):
        p.write_bytes(b"x")
        os.utime(p, (long_ago, long_ago))
    parse_file(_rule_file(tmp_path))
    assert not legacy.exists() and not stale.exists()
    assert len(list((tmp_path / "ast").glob("*.pickle"))) == 1


def test_an_unreadable_entry_is_parsed_again(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    where = tmp_path / "c"
    monkeypatch.setenv("MSC_RULES_CACHE_DIR", str(where))
    monkeypatch.delenv("MSC_RULES_NO_CACHE", raising=False)
    src = _rule_file(tmp_path)
    first = parse_file(src)
    (entry,) = where.glob("*.pickle")
    entry.write_bytes(b"not a pickle")
    assert parse_file(src) == first
    assert cache.load(where, entry.stem) == first  # rewritten
