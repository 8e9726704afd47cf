"""msc_rules: stable names and tensor layouts for every expression of a TVM Relax module.

Public API (see README):
    SetExprLayout, SetExprName, annotate, get_layout, get_name, load_rules, infer_layouts
"""

from __future__ import annotations

from .dsl.ruleset import RuleSet, load_rules
from .engine import InferenceResult, infer_layouts
from .errors import (
    GuessedWeightError,
    IRError,
    MissingLayoutError,
    MscRulesError,
    NativeBuildError,
    RuleFileError,
)
from .naming import NamePlan, plan_names
from .passes import (
    PIPELINE_NAME,
    SetExprLayout,
    SetExprName,
    annotate,
    annotated_pipeline,
    annotation_passes,
)
from .span import get_layout, get_name

__all__ = [
    "GuessedWeightError",
    "IRError",
    "InferenceResult",
    "MissingLayoutError",
    "MscRulesError",
    "NamePlan",
    "NativeBuildError",
    "PIPELINE_NAME",
    "RuleFileError",
    "RuleSet",
    "SetExprLayout",
    "SetExprName",
    "annotate",
    "annotated_pipeline",
    "annotation_passes",
    "get_layout",
    "get_name",
    "infer_layouts",
    "load_rules",
    "plan_names",
]
