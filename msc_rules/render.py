"""The dataflow graph of an analysed module as .dot, .svg or a self-contained .html.

Nodes are the tensor-valued params, constants and bindings of the entry function and
its callees, labelled with their names and layouts and coloured by layout (one colour
per distinct layout); tensors in a conflict get a thick red border, tensors whose layout
is only a guess (initial letters) a dashed one.

The layout is computed here in pure Python (no graphviz needed): layers by longest
path in program order, a few barycenter sweeps to reduce crossings, then left-to-right
placement pulled towards each node's producers. The HTML file inlines the SVG, its CSS
and a small script (pan, zoom, search, details on click); it loads nothing.
"""

from __future__ import annotations

import bisect
import colorsys
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .guesses import leaves_of as _leaves
from .report import (
    Analysis,
    _op_label,
    _shape_text,
    _value_op,
    conflict_info,
    short_path,
)

FORMATS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".html": "html", ".htm": "html"}

_FONT = 12
_CHAR_W = 7.2  # average glyph width at 12px, for box sizes
_NODE_H = 38
_LAYER_GAP = 70
_NODE_GAP = 24
_MARGIN = 30
_LEGEND_W = 190


@dataclass
class GNode:
    """One drawn tensor."""

    id: int
    name: str
    op: str
    shape: str
    layout: str
    kind: str  # "param" | "const" | "binding" | "collapsed" (repeated blocks)
    func: str
    decision: str = ""
    guessed: bool = False
    conflicts: list[str] = field(default_factory=list)
    focus: bool = False  # the tensor a partial drawing is centred on (--focus)
    key: str = ""  # the colour key when not the layout (a channel group)
    # placement
    layer: int = 0
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0


@dataclass
class GEdge:
    """A use of one value by another (`link`: an identity link across a call)."""

    src: int
    dst: int
    link: bool = False


@dataclass
class GraphData:
    """The nodes, edges and legend of one drawing."""

    title: str
    nodes: list[GNode]
    edges: list[GEdge]
    colors: dict[str, str]
    conflicts: int
    width: float = 0.0
    height: float = 0.0
    part: str = ""
    """Set when only part of the graph is drawn (--focus): which part."""


# --------------------------------------------------------------------------- data


def _decision_text(analysis: Analysis, leaf: int) -> str:
    r = analysis.result
    d = r.decisions[leaf]
    if d is None:
        return "no layout"
    if d.equation is None:
        return {"fallback": "guessed: initial letters", "seed": "seed"}.get(d.kind, d.kind)
    cs = r.view.sites[d.site]
    eq = d.equation
    site = analysis.names.value_name[cs.value_id]
    return (f"{' '.join(eq.text.split())}  [{_op_label(cs.op)} at {site}, "
            f"{short_path(eq.pos.file)}:{eq.pos.line}]")


MAX_NODES = 2000
"""Past this many tensors a drawing is refused (see graph_data): browsers show a huge
SVG as an almost empty page, and nobody reads 20k boxes anyway."""


def _neighbourhood(analysis: Analysis, focus: str, depth: int) -> set[int]:
    """The value ids within `depth` uses (either direction) of the tensor `focus`."""
    from .report import find_tensor

    view = analysis.view
    _, leaves = find_tensor(analysis, focus)
    start = {view.leaf_value[x] for x in leaves}
    adj: dict[int, set[int]] = {}
    for u, w in view.graph.edges:
        adj.setdefault(u, set()).add(w)
        adj.setdefault(w, set()).add(u)
    for cs in view.sites:  # identity links across calls count as uses too
        if cs.op != "<link>":
            continue
        outs = {view.leaf_value[x] for x in _leaves(cs.out)}
        ins = {view.leaf_value[x] for st in cs.args for x in _leaves(st)}
        for a in ins:
            for b in outs:
                adj.setdefault(a, set()).add(b)
                adj.setdefault(b, set()).add(a)
    seen, frontier = set(start), set(start)
    for _ in range(depth):
        frontier = {w for u in frontier for w in adj.get(u, ()) if w not in seen}
        seen |= frontier
    return seen


_MAX_PERIOD = 1000  # the longest repeated block (in bindings) looked for


@dataclass(frozen=True)
class _Repeat:
    """A block of `period` bindings repeated `times` times in a row, from `start` (an
    index into the sequence of drawn bindings)."""

    start: int
    period: int
    times: int


def _repeats(ops: list[str]) -> list[_Repeat]:
    """Runs of a repeated block of ops (the layers of a network), left to right: at each
    position the block that covers the most bindings wins (the shortest on ties); a run
    must stand for at least two bindings beyond its first block."""
    where: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        where.setdefault(op, []).append(i)
    found: list[_Repeat] = []
    i, n = 0, len(ops)
    while i < n:
        best = _Repeat(i, 1, 1)
        # a block starting at i repeats at a later occurrence of ops[i]
        later = where[ops[i]]
        k = bisect.bisect_right(later, i)
        while k < len(later) and later[k] - i <= min(_MAX_PERIOD, (n - i) // 2):
            period = later[k] - i
            k += 1
            times = 1
            while (i + (times + 1) * period <= n
                   and ops[i + times * period:i + (times + 1) * period] == ops[i:i + period]):
                times += 1
            if times > 1 and times * period > best.times * best.period:
                best = _Repeat(i, period, times)
        if (best.times - 1) * best.period >= 2:  # one binding saved is not worth a node
            found.append(best)
            i += best.times * best.period
        else:
            i += 1
    return found


def _collapse(analysis: Analysis, ids: list[int]) -> tuple[dict[int, int], list[GNode]]:
    """Collapse repeated blocks among the values `ids` (in program order): every
    instance after the first becomes one node per run. Returns where each collapsed
    value went (value id -> the run's node id) and the runs' nodes."""
    view = analysis.view
    values = view.values
    bindings = [i for i in ids if values[i].kind == "binding"]
    runs = _repeats([_value_op(values[i]) for i in bindings])
    into: dict[int, int] = {}
    made: list[GNode] = []
    for run in runs:
        gone = bindings[run.start + run.period:run.start + run.times * run.period]
        # the run's node takes the id of the first value it stands for: unique (that
        # value is not drawn) and in program order, which the placement ranks by
        node_id = gone[0]
        for i in gone:
            into[i] = node_id
        first = values[bindings[run.start]]
        made.append(GNode(
            node_id, f"{run.times - 1} more like it", "repeats of the block above",
            f"{len(gone):,} bindings", "", "collapsed", first.func,
            f"{run.times - 1} more instances of the block of {run.period} binding(s) from "
            f"{analysis.names.value_name[first.id]}, collapsed"))
    # a weight or input used only by collapsed bindings goes with them
    users: dict[int, set[int]] = {}
    for u, w in view.graph.edges:
        users.setdefault(u, set()).add(w)
    for i in ids:
        if values[i].kind != "binding" and i not in into:
            targets = {into.get(w, -1) for w in users.get(i, ())}
            if len(targets) == 1 and -1 not in targets:
                into[i] = next(iter(targets))
    return into, made


def graph_data(analysis: Analysis, title: str = "", consts: bool = True,
               focus: str | None = None, depth: int = 3,
               max_nodes: int = MAX_NODES, collapse: bool | None = None,
               groups: Sequence[Any] | None = None) -> GraphData:
    """The nodes and edges of the drawing, with layouts, decisions and conflicts;
    coloured by layout, or with `groups` (channel groups of the same module) by group.

    With `focus` (a tensor name, as `explain` takes it), only the tensors within
    `depth` uses of it. With `collapse` (None: when the whole graph has more than
    `max_nodes` tensors), repeated blocks of bindings (the layers of a network) are
    drawn once, their other instances as one node per run. More than `max_nodes`
    tensors (0: no limit) is a ReportError that says how to draw less.
    """
    r = analysis.result
    view = analysis.view
    names = analysis.names
    keep = _neighbourhood(analysis, focus, depth) if focus else None
    drawable = [v.id for v in view.values
                if _leaves(v.struct) and (consts or v.kind != "const")
                and (keep is None or v.id in keep)]
    total = sum(1 for v in view.values if _leaves(v.struct) and (consts or v.kind != "const"))
    drawn = len(drawable)
    if collapse is None:
        collapse = bool(max_nodes) and drawn > max_nodes and not focus
    into: dict[int, int] = {}
    runs: list[GNode] = []
    if collapse:
        into, runs = _collapse(analysis, drawable)
        drawn = drawn - len(into) + len(runs)
    if max_nodes and drawn > max_nodes:
        from .report import ReportError

        some = next((names.value_name[v.id] for v in view.values
                     if v.kind == "binding" and v.id >= len(view.values) // 2), "NAME")
        where = f" within {depth} steps of '{focus}'" if focus else ""
        where += " with repeated blocks collapsed" if collapse else ""
        weights = ", leave weights out with --no-consts" if consts else ""
        raise ReportError(
            f"the graph has {drawn} tensors{where}, more than a browser draws readably "
            f"(--max-nodes {max_nodes}): draw the part around one tensor with --focus NAME "
            f"--depth K (e.g. --focus {some} --depth 4){weights}, "
            "or raise --max-nodes (0: no limit)")
    by_leaf: dict[int, list[str]] = {}
    for c in r.conflicts:
        info = conflict_info(analysis, c)
        text = f"{c.kind}: {c.message} — {info.equation} ({info.position})"
        by_leaf.setdefault(c.leaf, []).append(text)
    nodes: dict[int, GNode] = {}
    wanted = set(drawable) - set(into)
    for v in view.values:
        if v.id not in wanted:
            continue
        leaves = _leaves(v.struct)
        layout = r.marker(v.struct)
        decs = [_decision_text(analysis, x) for x in leaves]
        guessed = any((d := r.decisions[x]) is not None and d.kind == "fallback" for x in leaves)
        own = [x for x in leaves if view.leaf_value[x] == v.id]
        conflicts = [t for x in own for t in by_leaf.get(x, [])]
        nodes[v.id] = GNode(v.id, names.value_name[v.id], _value_op(v), _shape_text(v.expr.ty),
                            layout, v.kind, v.func, "; ".join(dict.fromkeys(decs)), guessed,
                            conflicts)
    for run in runs:
        nodes[run.id] = run
    edges: list[GEdge] = []
    seen: set[tuple[int, int]] = set()
    for u, w in sorted(view.graph.edges):
        a, b = into.get(u, u), into.get(w, w)
        if a != b and a in nodes and b in nodes and (a, b) not in seen:
            seen.add((a, b))
            edges.append(GEdge(a, b))
    for cs in view.sites:  # identity links: call arguments -> params, result -> call
        outs = _leaves(cs.out)
        if cs.op != "<link>" or not outs:
            continue
        b = view.leaf_value[outs[0]]
        b = into.get(b, b)
        for a in dict.fromkeys(view.leaf_value[x] for st in cs.args for x in _leaves(st)):
            a = into.get(a, a)
            if a != b and a in nodes and b in nodes and (a, b) not in seen:
                seen.add((a, b))
                edges.append(GEdge(a, b, link=True))
    if groups is not None:
        _group_keys(nodes, view, groups)
        keys = sorted({n.key for n in nodes.values() if n.key},
                      key=lambda k: [int(t) for t in k.split()[1].split("+")])
        colors = {k: _color(i) for i, k in enumerate(keys)}
    else:
        layouts = sorted({n.layout for n in nodes.values() if n.layout})
        colors = {lay: _color(i) for i, lay in enumerate(layouts)}
    if focus:
        from .report import find_tensor

        for x in find_tensor(analysis, focus)[1]:
            if view.leaf_value[x] in nodes:
                nodes[view.leaf_value[x]].focus = True
    shown = len(r.conflicts) if keep is None else sum(len(n.conflicts) for n in nodes.values())
    g = GraphData(title, list(nodes.values()), edges, colors, shown)
    if keep is not None:
        g.part = f"{len(nodes)} of {total} tensors: within {depth} steps of {focus}"
    elif runs:
        g.part = (f"{total} tensors, {len(into)} of them in {len(runs)} collapsed "
                  f"run(s) of repeated blocks")
    _place(g)
    return g


def _group_keys(nodes: dict[int, GNode], view: Any, groups: Sequence[Any]) -> None:
    """Key each node by the groups its tensor's channel axis belongs to ("group 3", or
    "group 1+2" for a concat of two groups); leaves of the groups' view number alike."""
    of: dict[int, list[int]] = {}
    for g in groups:
        for m in g.members:
            # (a weight is coloured by the group of its output channels, not its inputs')
            if 0 <= m.leaf < len(view.leaf_value) and m.role != "consumer":
                ids = of.setdefault(view.leaf_value[m.leaf], [])
                if g.id not in ids:
                    ids.append(g.id)
    for vid, ids in of.items():
        n = nodes.get(vid)
        if n is not None:
            n.key = "group " + "+".join(str(i) for i in sorted(ids))


def _color(i: int) -> str:
    hue = (i * 0.381966) % 1.0  # golden-ratio steps: neighbours in the legend differ
    light = 0.82 if i % 2 == 0 else 0.74
    red, green, blue = colorsys.hls_to_rgb(hue, light, 0.65)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


def _darker(color: str) -> str:
    red, green, blue = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    h, lum, s = colorsys.rgb_to_hls(red, green, blue)
    red, green, blue = colorsys.hls_to_rgb(h, lum * 0.45, s)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


# --------------------------------------------------------------------------- layout


def _place(g: GraphData) -> None:
    if not g.nodes:
        g.width = g.height = 2 * _MARGIN
        return
    ids = sorted(n.id for n in g.nodes)
    node = {n.id: n for n in g.nodes}
    preds: dict[int, list[int]] = {i: [] for i in ids}
    succs: dict[int, list[int]] = {i: [] for i in ids}
    for e in g.edges:
        if e.src < e.dst:  # program order is topological; back links are drawn, not ranked
            preds[e.dst].append(e.src)
            succs[e.src].append(e.dst)
    for i in ids:  # longest path from the sources
        node[i].layer = max((node[p].layer + 1 for p in preds[i]), default=0)
    for i in reversed(ids):  # as late as possible: weights sit just above their first user
        if succs[i]:
            node[i].layer = max(node[i].layer, min(node[s].layer for s in succs[i]) - 1)
    nlayers = max(n.layer for n in g.nodes) + 1
    layers: list[list[int]] = [[] for _ in range(nlayers)]
    for i in ids:
        layers[node[i].layer].append(i)
    order = {i: k for layer in layers for k, i in enumerate(layer)}

    def sweep(nbrs: dict[int, list[int]], seq: list[list[int]]) -> None:
        for layer in seq:
            bary = {i: (sum(order[p] for p in nbrs[i]) / len(nbrs[i]) if nbrs[i] else order[i])
                    for i in layer}
            layer.sort(key=lambda i: (bary[i], order[i]))
            for k, i in enumerate(layer):
                order[i] = k

    for _ in range(4):
        sweep(preds, layers[1:])
        sweep(succs, layers[-2::-1])
    for n in g.nodes:
        n.w = max(60.0, _CHAR_W * max(len(n.name), len(_subtitle(n))) + 20)
    # left to right, each node pulled towards the centre of its producers
    for k, layer in enumerate(layers):
        right: float = _MARGIN - _NODE_GAP
        for i in layer:
            n = node[i]
            ps = [node[p] for p in preds[i] if node[p].layer < k]
            want = (sum(p.x + p.w / 2 for p in ps) / len(ps) - n.w / 2) if ps else right
            n.x = max(right + _NODE_GAP, want)
            n.y = _MARGIN + 60 + k * (_NODE_H + _LAYER_GAP)
            right = n.x + n.w
    g.width = max(n.x + n.w for n in g.nodes) + _MARGIN
    g.height = max(n.y for n in g.nodes) + _NODE_H + _MARGIN


def _subtitle(n: GNode) -> str:
    """The second line of a node's box."""
    return n.shape if n.kind == "collapsed" else f"{n.layout or '?'} · {_short(n.op)}"


def _short(op: str) -> str:
    return op.rsplit(".", 1)[-1]


# --------------------------------------------------------------------------- outputs


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _tooltip(n: GNode) -> str:
    lines = [n.name, f"op: {n.op}", f"shape: {n.shape}", f"layout: {n.layout or '(none)'}",
             f"function: {n.func}", f"decided by: {n.decision}"]
    lines += [f"CONFLICT {c}" for c in n.conflicts]
    return "\n".join(lines)


def to_svg(g: GraphData, standalone: bool = True) -> str:
    """The drawing as SVG (a complete file when `standalone`, else an inline element)."""
    node = {n.id: n for n in g.nodes}
    out: list[str] = []
    head = ('<?xml version="1.0" encoding="UTF-8"?>\n' if standalone else "")
    # a standalone picture carries its legend in a column on the right
    width = g.width + _LEGEND_W if standalone else g.width
    height = max(g.height, _MARGIN * 2 + 18 * len(g.colors)) if standalone else g.height
    out.append(f'{head}<svg xmlns="http://www.w3.org/2000/svg" id="graph" '
               f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
               f'height="{height:.0f}" font-family="Helvetica, Arial, sans-serif" '
               f'font-size="{_FONT}">')
    out.append('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
               'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
               '<path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>')
    out.append(f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>')
    out.append(f'<text x="{_MARGIN}" y="{_MARGIN}" font-size="16" font-weight="bold">'
               f'{_e(g.title)}</text>')
    counts = g.part or f"{len(g.nodes)} tensors"
    out.append(f'<text x="{_MARGIN}" y="{_MARGIN + 20}" fill="#555">{_e(counts)}, '
               f'{len(g.colors)} layouts, {g.conflicts} conflicts</text>')
    out.append('<g class="edges">')
    for e in g.edges:
        a, b = node[e.src], node[e.dst]
        x1, y1 = a.x + a.w / 2, a.y + _NODE_H
        x2, y2 = b.x + b.w / 2, b.y
        if y2 <= y1:  # a back link (callee result to caller): go around
            y1, y2 = a.y + _NODE_H / 2, b.y + _NODE_H / 2
            x1, x2 = a.x + a.w, b.x + b.w
            mid = max(x1, x2) + 60
            d = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        else:
            dy = (y2 - y1) / 2
            d = (f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + dy:.1f} {x2:.1f},{y2 - dy:.1f} "
                 f"{x2:.1f},{y2:.1f}")
        dash = ' stroke-dasharray="5,4"' if e.link else ""
        out.append(f'<path class="edge" data-src="n{e.src}" data-dst="n{e.dst}" d="{d}" '
                   f'fill="none" stroke="#999" stroke-width="1.2"{dash} '
                   f'marker-end="url(#arrow)"/>')
    out.append("</g>")
    out.append('<g class="nodes">')
    for n in g.nodes:
        fill = g.colors.get(n.key or n.layout, "#f2f2f2")
        stroke, width, dash = _darker(fill), 1.2, ""
        if n.guessed:
            dash = ' stroke-dasharray="4,3"'
        if n.conflicts:
            stroke, width = "#d00000", 3.5
        rx = 3 if n.kind == "const" else 14 if n.kind == "param" else 7
        cls = "node" + (" conflict" if n.conflicts else "") + (" focus" if n.focus else "")
        out.append(
            f'<g class="{cls}" id="n{n.id}" data-name="{_e(n.name)}" data-op="{_e(n.op)}" '
            f'data-shape="{_e(n.shape)}" data-layout="{_e(n.layout)}" '
            f'data-key="{_e(n.key or n.layout)}" data-kind="{n.kind}" '
            f'data-func="{_e(n.func)}" data-decision="{_e(n.decision)}" '
            f'data-conflicts="{_e(json.dumps(n.conflicts))}" '
            f'transform="translate({n.x:.1f},{n.y:.1f})">')
        out.append(f"<title>{_e(_tooltip(n))}</title>")
        out.append(f'<rect width="{n.w:.1f}" height="{_NODE_H}" rx="{rx}" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="{width}"{dash}/>')
        out.append(f'<text class="name" x="{n.w / 2:.1f}" y="15" text-anchor="middle" '
                   f'font-weight="bold">{_e(n.name)}</text>')
        sub = _subtitle(n)
        out.append(f'<text class="layout" x="{n.w / 2:.1f}" y="30" text-anchor="middle" '
                   f'fill="#333">{_e(sub)}</text>')
        if n.conflicts:
            out.append(f'<circle cx="{n.w:.1f}" cy="0" r="8" fill="#d00000"/>'
                       f'<text x="{n.w:.1f}" y="4" text-anchor="middle" fill="#fff" '
                       f'font-weight="bold">!</text>')
        out.append("</g>")
    out.append("</g>")
    if standalone:  # the legend lives in the side panel of the HTML page
        out.append(_svg_legend(g))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_legend(g: GraphData) -> str:
    x0 = g.width + 10
    parts = ['<g class="legend">']
    for k, (lay, col) in enumerate(g.colors.items()):
        y = _MARGIN + k * 18
        parts.append(f'<rect x="{x0:.0f}" y="{y}" width="14" height="14" fill="{col}" '
                     f'stroke="{_darker(col)}"/><text x="{x0 + 20:.0f}" y="{y + 11}">'
                     f'{_e(lay)}</text>')
    parts.append("</g>")
    return "".join(parts)


def to_dot(g: GraphData) -> str:
    """The graph in Graphviz DOT (coloured by layout; conflicts red and bold)."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [f"digraph {q(g.title or 'model')} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#999999"];']
    for n in g.nodes:
        fill = g.colors.get(n.key or n.layout, "#f2f2f2")
        attrs = [f"label={q(n.name + chr(10) + (n.layout or '?') + ' · ' + _short(n.op))}",
                 f"fillcolor={q(fill)}", f"tooltip={q(_tooltip(n))}"]
        style = ["rounded", "filled"]
        if n.guessed:
            style.append("dashed")
        if n.conflicts:
            attrs += ['color="#d00000"', "penwidth=3"]
            style.append("bold")
        attrs.append(f"style={q(','.join(style))}")
        lines.append(f"  n{n.id} [{', '.join(attrs)}];")
    for e in g.edges:
        extra = " [style=dashed]" if e.link else ""
        lines.append(f"  n{e.src} -> n{e.dst}{extra};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 13px Helvetica, Arial, sans-serif; color: #222; display: flex;
       flex-direction: column; height: 100vh; }
header { padding: 8px 12px; background: #24292f; color: #fff; display: flex; gap: 16px;
         align-items: center; }
header h1 { font-size: 15px; margin: 0; }
header input { padding: 3px 6px; width: 220px; }
#status { color: #cfd6dd; }
main { flex: 1; display: flex; min-height: 0; }
#canvas { flex: 1; overflow: hidden; cursor: grab; background: #fafafa; }
#canvas svg { width: 100%; height: 100%; }
aside { width: 320px; overflow: auto; border-left: 1px solid #ddd; padding: 10px; }
aside h2 { font-size: 13px; margin: 12px 0 6px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
          vertical-align: middle; border: 1px solid #888; }
.legend-row { cursor: pointer; padding: 1px 0; }
#details pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
.conflict-item { color: #a00; margin-bottom: 6px; cursor: pointer; }
g.node { cursor: pointer; }
g.node.dim { opacity: 0.18; }
g.node.hit rect { stroke: #0060df !important; stroke-width: 4 !important; }
path.edge.dim { opacity: 0.1; }
"""

_JS = """
(function () {
  var svg = document.getElementById('graph');
  var canvas = document.getElementById('canvas');
  var nodes = Array.prototype.slice.call(svg.querySelectorAll('g.node'));
  var edges = Array.prototype.slice.call(svg.querySelectorAll('path.edge'));
  var vb = svg.viewBox.baseVal;
  var full = {x: vb.x, y: vb.y, w: vb.width, h: vb.height};
  var conflicts = svg.querySelectorAll('g.node.conflict').length;
  document.getElementById('status').textContent =
    nodes.length + ' tensors, ' + edges.length + ' edges, ' + conflicts +
    ' with conflicts';
  function setBox(x, y, w, h) { vb.x = x; vb.y = y; vb.width = w; vb.height = h; }
  function fit() {
    // 1:1 with the screen when the graph is narrow, else the full width; top first
    var cw = canvas.clientWidth || 800, ch = canvas.clientHeight || 600;
    var w = Math.max(cw, full.w), h = w * ch / cw;
    setBox(full.x + full.w / 2 - w / 2, full.y, w, h);
  }
  svg.setAttribute('preserveAspectRatio', 'xMidYMin meet');
  svg.removeAttribute('width'); svg.removeAttribute('height');
  canvas.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect();
    var k = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    var px = vb.x + (ev.clientX - r.left) / r.width * vb.width;
    var py = vb.y + (ev.clientY - r.top) / r.height * vb.height;
    setBox(px - (px - vb.x) * k, py - (py - vb.y) * k, vb.width * k, vb.height * k);
  }, {passive: false});
  var drag = null;
  canvas.addEventListener('mousedown', function (ev) {
    drag = {x: ev.clientX, y: ev.clientY, vx: vb.x, vy: vb.y};
    canvas.style.cursor = 'grabbing';
  });
  window.addEventListener('mouseup', function () { drag = null; canvas.style.cursor = ''; });
  window.addEventListener('mousemove', function (ev) {
    if (!drag) return;
    var r = svg.getBoundingClientRect();
    var s = Math.max(vb.width / r.width, vb.height / r.height);
    setBox(drag.vx - (ev.clientX - drag.x) * s, drag.vy - (ev.clientY - drag.y) * s,
           vb.width, vb.height);
  });
  function show(g) {
    var d = g.dataset, c = JSON.parse(d.conflicts || '[]');
    var text = d.name + '\\nop: ' + d.op + '\\nshape: ' + d.shape + '\\nlayout: ' +
      (d.layout || '(none)') + '\\nfunction: ' + d.func + '\\ndecided by: ' + d.decision;
    c.forEach(function (m) { text += '\\nCONFLICT ' + m; });
    document.getElementById('details').querySelector('pre').textContent = text;
  }
  function focus(g) {
    var b = g.getBBox(), m = g.transform.baseVal.consolidate().matrix;
    var w = Math.max(600, vb.width / 2), h = w * (vb.height / vb.width);
    setBox(m.e + b.width / 2 - w / 2, m.f - h / 3, w, h);
  }
  nodes.forEach(function (g) {
    g.addEventListener('click', function (ev) { ev.stopPropagation(); show(g); });
  });
  function highlight(pred) {
    var ids = {};
    nodes.forEach(function (g) {
      var on = pred(g);
      g.classList.toggle('dim', !on && pred !== null);
      g.classList.toggle('hit', on);
      if (on) ids[g.id] = true;
    });
    edges.forEach(function (p) {
      p.classList.toggle('dim', !(ids[p.dataset.src] || ids[p.dataset.dst]));
    });
  }
  function clear() {
    nodes.forEach(function (g) { g.classList.remove('dim'); g.classList.remove('hit'); });
    edges.forEach(function (p) { p.classList.remove('dim'); });
  }
  document.getElementById('search').addEventListener('input', function (ev) {
    var q = ev.target.value.trim().toLowerCase();
    if (!q) { clear(); fit(); return; }
    var first = null;
    highlight(function (g) {
      var hit = g.dataset.name.toLowerCase().indexOf(q) >= 0 ||
                g.dataset.layout.toLowerCase() === q || g.dataset.op.toLowerCase() === q;
      if (hit && !first) first = g;
      return hit;
    });
    if (first) { focus(first); show(first); }
  });
  Array.prototype.forEach.call(document.querySelectorAll('.legend-row'), function (row) {
    row.addEventListener('click', function () {
      var lay = row.dataset.layout;
      highlight(function (g) { return g.dataset.key === lay; });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('.conflict-item'), function (it) {
    it.addEventListener('click', function () {
      var g = document.getElementById(it.dataset.node);
      if (g) { focus(g); show(g); highlight(function (x) { return x === g; }); }
    });
  });
  document.getElementById('reset').addEventListener('click', function () { clear(); fit(); });
  fit();
  // a partial drawing (--focus) opens on the tensor it is centred on
  var centre = svg.querySelector('g.node.focus');
  if (centre) { focus(centre); show(centre); centre.classList.add('hit'); }
})();
"""


def to_html(g: GraphData) -> str:
    """One self-contained HTML page: the SVG inline, CSS and a small script, no downloads."""
    legend = "\n".join(
        f'<div class="legend-row" data-layout="{_e(lay)}"><span class="swatch" '
        f'style="background:{col}"></span>{_e(lay)} '
        f'<span style="color:#777">({sum(1 for n in g.nodes if (n.key or n.layout) == lay)})'
        f'</span></div>'
        for lay, col in g.colors.items())
    conflict_rows = "\n".join(
        f'<div class="conflict-item" data-node="n{n.id}"><b>{_e(n.name)}</b>: {_e(c)}</div>'
        for n in g.nodes for c in n.conflicts) or "<div>none</div>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>msc-rules: {_e(g.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{_e(g.title)}</h1>
<input id="search" type="search" placeholder="find a tensor, layout or op">
<button id="reset" type="button">reset</button>
<span id="status">{len(g.nodes)} tensors</span></header>
<main>
<div id="canvas">
{to_svg(g, standalone=False)}
</div>
<aside>
<h2>Layouts</h2>
{legend or "<div>none</div>"}
<h2>Selected tensor</h2>
<div id="details"><pre>click a node</pre></div>
<h2>Conflicts ({g.conflicts})</h2>
{conflict_rows}
<h2>Key</h2>
<div>rounded: binding, pill: parameter, square: constant; dashed border: guessed layout
(initial letters); red border: conflict; dashed edge: call/If link.</div>
</aside>
</main>
<script>{_JS}</script>
</body>
</html>
"""


def write_graph(g: GraphData, path: str | Path, fmt: str | None = None) -> str:
    """Write the drawing to `path` in `fmt` (default: from the suffix); returns the format."""
    p = Path(path)
    kind = fmt or FORMATS.get(p.suffix.lower())
    if kind is None:
        from .report import ReportError

        raise ReportError(f"cannot tell the graph format of '{p}': use a .html, .svg or "
                          ".dot file (or --format)")
    text = {"dot": to_dot, "svg": to_svg, "html": to_html}[kind](g)
    p.write_text(text, encoding="utf-8")
    return kind


__all__ = ["FORMATS", "MAX_NODES", "GEdge", "GNode", "GraphData", "graph_data", "to_dot", "to_html",
           "to_svg", "write_graph"]
