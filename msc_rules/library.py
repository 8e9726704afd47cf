"""The default RuleSet: the shipped library (plus entry-point rule files), loaded once."""

from __future__ import annotations

import threading

from .dsl.ruleset import RuleSet, load_rules

_lock = threading.Lock()
_default: RuleSet | None = None


def default_rules() -> RuleSet:
    """The builtin rule library, loaded on first use and shared afterwards."""
    global _default
    with _lock:
        if _default is None:
            _default = load_rules()
        return _default


def reset_default_rules() -> None:
    """Forget the cached library (after installing a package that ships rule files)."""
    global _default
    with _lock:
        _default = None
