"""Span markers: the only place that knows the `<Key>value</Key>` format.

A marker lives in `span.source_name`. Setting a key replaces its marker in place or
appends one; any other text (a file name, say) stays in front. Readers accept the
2023 lower-case keys (`name`, `layout`, `master`) as well as the current ones.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import tvm
import tvm_ffi

NAME = "Name"
LAYOUT = "Layout"
SHARED_REF = "SharedRef"

_LEGACY = {NAME: "name", LAYOUT: "layout", SHARED_REF: "master"}
_MARKER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>(.*?)</\1>", re.S)


def _source_text(span: tvm.ir.Span | None) -> str:
    if span is None:
        return ""
    sn = span.source_name
    return "" if sn is None else str(sn.name)


def parse_markers(text: str) -> dict[str, str]:
    """Every marker in `text` as {key: value} (the legacy keys under their current names)."""
    out: dict[str, str] = {}
    legacy = {v: k for k, v in _LEGACY.items()}
    for m in _MARKER.finditer(text):
        key, value = m.group(1), m.group(2)
        if key in legacy:
            out.setdefault(legacy[key], value)
        else:
            out[key] = value
    return out


@functools.lru_cache(maxsize=256)
def _pattern(key: str) -> re.Pattern[str]:
    return re.compile(rf"<{re.escape(key)}>(.*?)</{re.escape(key)}>", re.S)


def get_marker_text(text: str, key: str) -> str:
    """The value of `key` in marker text ("" when absent); legacy keys are read too."""
    if "<" not in text:
        return ""
    m = _pattern(key).search(text)
    if m is None and key in _LEGACY:
        m = _pattern(_LEGACY[key]).search(text)
    return m.group(1) if m else ""


def set_marker_text(text: str, key: str, value: str) -> str:
    """Set `key` to `value` in marker text: replace in place (legacy key too) or append."""
    if not value:
        return text
    marker = f"<{key}>{value}</{key}>"
    if "<" in text:
        for k in (key, _LEGACY.get(key)):
            if k is None:
                continue
            pattern = _pattern(k)
            if pattern.search(text):
                return pattern.sub(lambda _: marker, text, count=1)
    return text + marker


_make_object = tvm_ffi.get_global_func("ffi.MakeObjectFromPackedArgs")


def source_name(text: str) -> tvm.ir.SourceName:
    """A SourceName holding `text`, made through the type's reflection creator as the
    native rebuild makes them: `tvm.ir.SourceName` interns every text in a global table
    that is never freed, which unique Name markers would grow for the life of the
    process (and that costs the same)."""
    return _make_object("ir.SourceName", "name", text)


_BARE_SPANS: dict[tuple[tuple[str, str], ...], tvm.ir.Span] = {}


def with_markers(
    span: tvm.ir.Span | None,
    markers: Mapping[str, str] | tuple[tuple[str, str], ...],
) -> tvm.ir.Span | None:
    """A span like `span` whose source name carries `markers` (a mapping or (key, value)
    pairs; None if there is nothing to write)."""
    pairs = markers if isinstance(markers, tuple) else tuple(markers.items())
    if span is None:
        # Most nodes have no span: share one immutable Span per marker set.
        key = pairs
        got = _BARE_SPANS.get(key)
        if got is None:
            text = ""
            for k, value in key:
                text = set_marker_text(text, k, value)
            got = tvm.ir.Span(source_name(text), 0, 0, 0, 0) if text else None
            if got is None:
                return None
            if len(_BARE_SPANS) < 65536:
                _BARE_SPANS[key] = got
        return got
    text = _source_text(span)
    new = text
    for key_, value in pairs:
        new = set_marker_text(new, key_, value)
    if new == text:
        return span
    return tvm.ir.Span(source_name(new), span.line, span.end_line, span.column,
                       span.end_column)


def get_marker(expr: tvm.ir.Node, key: str) -> str:
    """The value of marker `key` on `expr`'s span ("" when absent)."""
    return get_marker_text(_source_text(getattr(expr, "span", None)), key)


def get_markers(expr: tvm.ir.Node) -> dict[str, str]:
    """All markers on `expr`'s span."""
    return parse_markers(_source_text(getattr(expr, "span", None)))


def join_tuple(layouts: list[str | None]) -> str:
    """A tuple's layouts joined by commas, or "" unless every field is known."""
    if any(x is None for x in layouts):
        return ""
    return ",".join(x for x in layouts if x is not None)


def get_layout(expr: tvm.ir.Node) -> str:
    """The layout marker of `expr` ("" when absent)."""
    return get_marker(expr, LAYOUT)


def get_name(expr: tvm.ir.Node) -> str:
    """The name marker of `expr`; a Var without one falls back to its own name."""
    name = get_marker(expr, NAME)
    if not name and isinstance(expr, tvm.ir.expr.Var):
        return str(expr.name)
    return name


def get_shared_ref(expr: tvm.ir.Node) -> str:
    """The SharedRef marker: the name of the call that consumed the weight first."""
    return get_marker(expr, SHARED_REF)
