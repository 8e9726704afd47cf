"""msc_rules: stable names and tensor layouts for every expression of a TVM Relax module.

Public API (see README):
    SetExprLayout, SetExprName, annotate, get_layout, get_name, load_rules, infer_layouts
"""

from __future__ import annotations

from .dsl.ruleset import RuleSet, load_rules
from .engine import InferenceResult, infer_layouts
from .errors import IRError, MissingLayoutError, MscRulesError, RuleFileError
from .passes import SetExprLayout
from .span import get_layout, get_name

__all__ = [
    "IRError",
    "InferenceResult",
    "MissingLayoutError",
    "MscRulesError",
    "RuleFileError",
    "RuleSet",
    "SetExprLayout",
    "get_layout",
    "get_name",
    "infer_layouts",
    "load_rules",
]
