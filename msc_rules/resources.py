"""Where the shipped data lives: the grammar and the rule library.

An installed wheel carries them as `msc_rules/_data/{grammar,rules}`; a source
checkout (or an editable install) has them at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The directory of shipped data `name` ("grammar" or "rules")."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"msc_rules data directory '{name}' is missing from the install")


def grammar_path() -> Path:
    """The lark grammar of the rule language."""
    return data_dir("grammar") / "rules.lark"


def builtin_rule_files() -> list[Path]:
    """The rule library's files, in a fixed (sorted) order."""
    return sorted(data_dir("rules").glob("*.rules"))
