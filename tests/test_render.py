"""Drawing big models (msc_rules/render.py): past a threshold repeated blocks (layers)
are drawn once, and a drawing still too big is refused with advice; `--focus NAME
--depth K` draws the part around one tensor; headless Chromium shows both drawings of
a 20k-binding model with their nodes on screen.

The screenshot test is skipped when no chromium binary is on PATH (.ci/run installs
Debian's `chromium`).
"""

from __future__ import annotations

import importlib.util
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import tvm
from chromium import find_chromium

from msc_rules import cli
from msc_rules.library import default_rules
from msc_rules.render import MAX_NODES, _Repeat, _repeats, graph_data, to_html
from msc_rules.report import ReportError, analyze
from msc_rules.util import paused_gc

REPO = Path(__file__).resolve().parents[1]


def _synthetic(n: int) -> tvm.IRModule:
    spec = importlib.util.spec_from_file_location("synthetic", REPO / "benchmarks" / "synthetic.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with paused_gc():
        mod: tvm.IRModule = module.conv_chain(n)
    return mod


@pytest.fixture(scope="module")
def big() -> object:
    """The analysis of a 20k-binding conv/add/relu/reshape/permute chain."""
    return analyze(_synthetic(20_000), default_rules())


def test_repeated_blocks_are_found() -> None:
    assert _repeats(list("abcabcabcx")) == [_Repeat(0, 3, 3)]
    assert _repeats(list("xababy")) == [_Repeat(1, 2, 2)]
    assert _repeats(list("aaaa")) == [_Repeat(0, 1, 4)]
    assert _repeats(list("abcd")) == []
    assert _repeats(list("aab")) == []  # collapsing one binding saves nothing
    # the block covering the most wins over a shorter one that starts earlier
    assert _repeats(list("aabaab" * 3)) == [_Repeat(0, 3, 6)]


def test_a_big_graph_collapses_its_repeated_blocks(big: object) -> None:
    g = graph_data(big)  # type: ignore[arg-type]
    assert len(g.nodes) <= 20
    (run,) = [n for n in g.nodes if n.kind == "collapsed"]
    assert run.name == "2857 more like it" and run.shape == "19,999 bindings"
    assert "block of 7 binding(s) from conv2d, collapsed" in run.decision
    by_id = {n.id: n for n in g.nodes}
    into = [by_id[e.src].name for e in g.edges if e.dst == run.id]
    out_of = [by_id[e.dst].name for e in g.edges if e.src == run.id]
    assert into == ["reshape_1"] and out_of == ["gv"]
    assert re.fullmatch(r"\d+ tensors, \d+ of them in 1 collapsed run\(s\) of repeated blocks",
                        g.part)
    html = to_html(g)
    assert 'data-kind="collapsed"' in html and ">19,999 bindings</text>" in html


def test_a_big_graph_is_refused_with_advice(big: object) -> None:
    with pytest.raises(ReportError) as info:
        graph_data(big, collapse=False)  # type: ignore[arg-type]
    text = str(info.value)
    m = re.search(r"the graph has (\d+) tensors, more than a browser draws readably "
                  rf"\(--max-nodes {MAX_NODES}\): draw the part around one tensor with "
                  r"--focus NAME --depth K \(e\.g\. --focus (\S+) --depth 4\)", text)
    assert m and int(m.group(1)) > 20_000, text
    assert "--no-consts" in text and "raise --max-nodes" in text
    # the example it suggests works
    g = graph_data(big, focus=m.group(2), depth=4)  # type: ignore[arg-type]
    assert 5 <= len(g.nodes) <= 40
    assert [n.name for n in g.nodes if n.focus] == [m.group(2)]
    # collapsed, but still too many for a tiny limit
    with pytest.raises(ReportError, match=r"the graph has \d+ tensors with repeated blocks "
                                          r"collapsed, more than .* \(--max-nodes 5\)"):
        graph_data(big, max_nodes=5)  # type: ignore[arg-type]


def test_focus_draws_the_neighbourhood_only(big: object) -> None:
    g = graph_data(big, focus="relu_1000", depth=2)  # type: ignore[arg-type]
    names = {n.name for n in g.nodes}
    # two uses either way of the relu: add <- conv2d / add.rhs, and reshape -> permute
    assert {"relu_1000", "add_1000", "conv2d_1000", "add_1000.rhs", "reshape_2000",
            "permute_dims_2000"} <= names
    assert "relu_999" not in names and "relu_1001" not in names
    assert g.part.startswith(f"{len(g.nodes)} of ") and "within 2 steps of relu_1000" in g.part
    assert all(e.src in {n.id for n in g.nodes} for e in g.edges)
    wider = graph_data(big, focus="relu_1000", depth=6)  # type: ignore[arg-type]
    assert names < {n.name for n in wider.nodes}


def test_cli_focus_depth_and_max_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "cnn.html"
    assert cli.main(["graph", "cnn", "-o", str(page), "--max-nodes", "10"]) == 1
    err = capsys.readouterr().err
    assert "with repeated blocks collapsed, more than a browser draws readably " in err
    assert "(--max-nodes 10)" in err
    assert cli.main(["graph", "cnn", "-o", str(page), "--max-nodes", "10", "--no-collapse"]) == 1
    err = capsys.readouterr().err
    assert "tensors, more than a browser draws readably (--max-nodes 10)" in err
    assert cli.main(["graph", "cnn", "-o", str(page), "--focus", "relu", "--depth", "1"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"wrote html graph of \d+ of \d+ tensors: within 1 steps of relu", err)
    html = page.read_text()
    assert re.search(r'<g class="node focus" id="n\d+" data-name="relu"', html)
    assert cli.main(["graph", "cnn", "-o", str(page), "--focus", "nope"]) == 1
    assert "no tensor named 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- screenshot


def _png_rgba(path: Path) -> tuple[int, int, bytes]:
    """Width, height and RGBA bytes of an 8-bit RGB(A), non-interlaced PNG (what
    Chromium writes); no imaging library needed."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, kind = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, kind, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and kind in (2, 6) and interlace == 0
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if kind == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        prev = line
        if bpp == 3:
            for i in range(0, stride, 3):
                out += line[i:i + 3] + b"\xff"
        else:
            out += line
    return width, height, bytes(out)


@pytest.mark.skipif(find_chromium() is None,
                    reason="headless Chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("focus", ["relu_1000", None])
def test_drawings_of_a_20k_binding_model_show_their_nodes(big: object, tmp_path: Path,
                                                          focus: str | None) -> None:
    # focused on one relu, or the whole model with its 2857 repeated blocks collapsed
    g = graph_data(big, focus=focus, depth=6)  # type: ignore[arg-type]
    page = tmp_path / "big.html"
    page.write_text(to_html(g))
    shot = tmp_path / "big.png"
    chrome = find_chromium()
    assert chrome
    subprocess.run(
        [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,700",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    width, height, rgba = _png_rgba(shot)
    assert (width, height) == (1000, 700)
    # pixels of the drawing area (left of the side panel, below the header) in the fill
    # colour of each layout: the node boxes on screen
    fills = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)): lay for lay, c in g.colors.items()}
    seen: dict[str, int] = {}
    for y in range(60, height):
        row = rgba[y * width * 4:(y + 1) * width * 4]
        for x in range(0, 640):
            lay = fills.get((row[4 * x], row[4 * x + 1], row[4 * x + 2]))
            if lay is not None:
                seen[lay] = seen.get(lay, 0) + 1
    # the drawing opens on relu_1000 (NCHW), or at the top of the overview; boxes of at
    # least two layouts are in view
    assert seen.get("NCHW", 0) > 5000, seen
    assert len([lay for lay, count in seen.items() if count > 1000]) >= 2, seen
