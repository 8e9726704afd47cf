"""Span markers: format, legacy keys, replacement, other text kept."""

from __future__ import annotations

import tvm
from tvm import relax

from msc_rules import span


def test_set_appends_and_replaces_in_place() -> None:
    text = span.set_marker_text("", "Name", "conv2d")
    text = span.set_marker_text(text, "Layout", "NCHW")
    assert text == "<Name>conv2d</Name><Layout>NCHW</Layout>"
    text = span.set_marker_text(text, "Name", "conv2d_1")
    assert text == "<Name>conv2d_1</Name><Layout>NCHW</Layout>"


def test_other_text_stays_in_front_and_empty_values_are_not_written() -> None:
    text = span.set_marker_text("model.py", "Layout", "NC")
    assert text == "model.py<Layout>NC</Layout>"
    assert span.set_marker_text(text, "Name", "") == text


def test_legacy_lower_case_keys_are_read_and_replaced() -> None:
    text = "<name>relu</name><layout>AB</layout><master>conv</master>"
    assert span.get_marker_text(text, "Name") == "relu"
    assert span.get_marker_text(text, "Layout") == "AB"
    assert span.get_marker_text(text, "SharedRef") == "conv"
    assert span.parse_markers(text) == {"Name": "relu", "Layout": "AB", "SharedRef": "conv"}
    assert span.set_marker_text(text, "Layout", "NC") == (
        "<name>relu</name><Layout>NC</Layout><master>conv</master>")


def test_all_keys_are_read_not_only_the_last() -> None:
    text = "<Name>a</Name><Layout>NC</Layout><Custom>x</Custom>"
    assert span.parse_markers(text) == {"Name": "a", "Layout": "NC", "Custom": "x"}


def test_with_markers_keeps_positions_and_reads_back() -> None:
    old = tvm.ir.Span(tvm.ir.SourceName("f.py"), 3, 4, 5, 6)
    new = span.with_markers(old, {"Layout": "NCHW"})
    assert new is not None
    assert (new.line, new.end_line, new.column, new.end_column) == (3, 4, 5, 6)
    x = relax.Var("x", relax.TensorType([1, 2, 3, 4], "float32"), new)
    assert span.get_layout(x) == "NCHW"
    assert span.get_name(x) == "x"  # a Var without a Name marker falls back to its name
    assert span.get_layout(relax.Var("y", relax.TensorType([1], "float32"))) == ""
    assert span.with_markers(None, {"Layout": ""}) is None


def test_join_tuple_needs_every_field() -> None:
    assert span.join_tuple(["NCHW", "O", "O"]) == "NCHW,O,O"
    assert span.join_tuple(["NCHW", None]) == ""
