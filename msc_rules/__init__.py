"""msc_rules: stable names and tensor layouts for every expression of a TVM Relax module.

Public API (see README):
    SetExprLayout, SetExprName, annotate, get_layout, get_name, load_rules, infer_layouts,
    channel_groups, prune, mask_consumers, quant_axes, param_slices, prune_params
"""

from __future__ import annotations

from .channels import ChannelGroup, ChannelGroups, Member, QuantAxes, channel_groups, quant_axes
from .dsl.ruleset import RuleSet, load_rules
from .engine import InferenceResult, infer_layouts
from .errors import (
    GuessedWeightError,
    IRError,
    MissingLayoutError,
    MscRulesError,
    NativeBuildError,
    PruneError,
    RuleFileError,
)
from .naming import NamePlan, plan_names
from .param_prune import param_slices, prune_params
from .passes import (
    PIPELINE_NAME,
    SetExprLayout,
    SetExprName,
    annotate,
    annotated_pipeline,
    annotation_passes,
)
from .prune import mask_consumers, prune
from .span import get_layout, get_name

__all__ = [
    "ChannelGroup",
    "ChannelGroups",
    "GuessedWeightError",
    "IRError",
    "InferenceResult",
    "Member",
    "MissingLayoutError",
    "MscRulesError",
    "NamePlan",
    "NativeBuildError",
    "PIPELINE_NAME",
    "PruneError",
    "QuantAxes",
    "RuleFileError",
    "RuleSet",
    "SetExprLayout",
    "SetExprName",
    "annotate",
    "annotated_pipeline",
    "annotation_passes",
    "channel_groups",
    "get_layout",
    "get_name",
    "infer_layouts",
    "load_rules",
    "mask_consumers",
    "param_slices",
    "plan_names",
    "prune",
    "prune_params",
    "quant_axes",
]
