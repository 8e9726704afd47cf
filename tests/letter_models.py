"""Small torch models for the layout-letter property tests (issue 11), each importable
into Relax four ways from the same torch module (random weights, ``torch.manual_seed``,
static tiny shapes, no downloads):

``fx``
    ``torch.fx.symbolic_trace`` + ``relax.frontend.torch.from_fx`` (weights as constants),
    then ``relax.transform.FoldConstant``.
``ep``
    ``torch.export`` + ``from_exported_program``, weights bound as constants.
``onnx``
    ``torch.onnx.export`` (dynamo exporter) + ``relax.frontend.onnx.from_onnx``.
``ep_params``
    ``torch.export`` + ``from_exported_program(keep_params_as_input=True)``: weights are
    trailing parameters of ``main`` (its ``num_input`` attribute counts the real inputs).

``build(model, route)`` returns a ``LetterModel`` (cached per process); a route that
TVM 0.27 cannot import for a model raises ``RouteUnsupported`` with the importer's
first error line, which the tests turn into a skip.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import tvm
from torch import nn
from tvm import relax

__all__ = [
    "MODELS",
    "ROUTES",
    "LetterModel",
    "RouteUnsupported",
    "MaskedScatter",
    "build",
    "fx_import",
    "torch_model",
]

ROUTES = ("fx", "ep", "onnx", "ep_params")


class RouteUnsupported(Exception):
    """An import route that fails for a model on this TVM (not an msc_rules failure)."""


@dataclass(frozen=True, eq=False)
class LetterModel:
    """An imported model: the module, and how many leading params of main are inputs."""

    name: str
    route: str
    mod: tvm.IRModule
    num_input: int


# --------------------------------------------------------------------------- models


class ResNetCNN(nn.Module):
    """Conv stem with bias, batch norm, a residual block, pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 16, 1, stride=2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = torch.relu(x + y)
        x = torch.relu(self.down(x))
        x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class MLP(nn.Module):
    """Two linear layers with a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.hd = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, s, d = x.shape
        q = self.q(x).reshape(b, s, self.heads, self.hd).permute(0, 2, 1, 3)
        k = self.k(x).reshape(b, s, self.heads, self.hd).permute(0, 2, 1, 3)
        v = self.v(x).reshape(b, s, self.heads, self.hd).permute(0, 2, 1, 3)
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
        if mask is not None:
            att = att + mask
        att = torch.softmax(att, dim=-1)
        y = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(b, s, d)
        return self.o(y)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _SelfAttention(dim, heads)
        self.ln1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.ln2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, mask))
        return self.ln2(x + self.fc2(torch.nn.functional.gelu(self.fc1(x))))


class BertLike(nn.Module):
    """Token + position embeddings, a post-norm encoder layer with an additive padding
    mask built from the attention mask input, and a tanh pooler."""

    def __init__(self, vocab: int = 30, seq: int = 8, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(seq, dim) * 0.02)
        self.ln = nn.LayerNorm(dim)
        self.layer = _EncoderLayer(dim, heads)
        self.pool = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.tok(ids) + self.pos)
        mask = (1.0 - attn_mask[:, None, None, :]) * -10000.0
        x = self.layer(x, mask)
        return torch.tanh(self.pool(x[:, 0]))


def _rotate_half(x: torch.Tensor, half: int) -> torch.Tensor:
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + 1e-6) * self.weight


class LlamaLike(nn.Module):
    """One decoder layer: RMSNorm, RoPE from an inv_freq buffer, grouped-query attention
    (4 query heads, 2 key/value heads) with a causal mask from position comparisons,
    a SwiGLU MLP and an LM head."""

    def __init__(self, vocab: int = 32, seq: int = 8, dim: int = 16, heads: int = 4,
                 kv_heads: int = 2) -> None:
        super().__init__()
        self.seq, self.heads, self.kv_heads, self.hd = seq, heads, kv_heads, dim // heads
        self.tok = nn.Embedding(vocab, dim)
        self.norm1 = _RMSNorm(dim)
        self.q = nn.Linear(dim, heads * self.hd, bias=False)
        self.k = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.v = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.o = nn.Linear(heads * self.hd, dim, bias=False)
        self.norm2 = _RMSNorm(dim)
        self.gate = nn.Linear(dim, 2 * dim, bias=False)
        self.up = nn.Linear(dim, 2 * dim, bias=False)
        self.down = nn.Linear(2 * dim, dim, bias=False)
        self.norm3 = _RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, self.hd, 2).float() / self.hd))
        self.register_buffer("inv_freq", inv_freq)
        self.register_buffer("pos", torch.arange(seq))
        self.register_buffer("neg", torch.tensor(-1e9))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, s = ids.shape
        x = self.tok(ids)
        freqs = self.pos.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        h = self.norm1(x)
        q = self.q(h).reshape(b, s, self.heads, self.hd).transpose(1, 2)
        k = self.k(h).reshape(b, s, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v(h).reshape(b, s, self.kv_heads, self.hd).transpose(1, 2)
        q = q * cos + _rotate_half(q, self.hd // 2) * sin
        k = k * cos + _rotate_half(k, self.hd // 2) * sin
        rep = self.heads // self.kv_heads
        k = k[:, :, None].expand(b, self.kv_heads, rep, s, self.hd).reshape(b, self.heads, s,
                                                                           self.hd)
        v = v[:, :, None].expand(b, self.kv_heads, rep, s, self.hd).reshape(b, self.heads, s,
                                                                           self.hd)
        causal = self.pos[:, None] >= self.pos[None, :]
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
        att = torch.where(causal, att, self.neg)
        att = torch.softmax(att, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, s, self.heads * self.hd)
        x = x + self.o(y)
        h = self.norm2(x)
        x = x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))
        return self.head(self.norm3(x))


class ViT(nn.Module):
    """Patch embedding conv, class token concat, position embedding, one encoder layer,
    a head on the class token."""

    def __init__(self, dim: int = 16, patch: int = 4, image: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        n = (image // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.layer = _EncoderLayer(dim, 2)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1) + self.pos
        x = self.norm(self.layer(x))
        return self.head(x[:, 0])


class SwinBlock(nn.Module):
    """Window attention on a [B,H,W,C] map: layer norm, window partition (reshape,
    permute), attention with a relative-position bias taken from a table, window
    reverse, the shortcut add, an MLP with a second residual."""

    def __init__(self, dim: int = 16, heads: int = 2, window: int = 4, size: int = 8) -> None:
        super().__init__()
        self.dim, self.heads, self.window, self.size = dim, heads, window, size
        self.hd = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("rel_index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]))
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        w, s, c, nh = self.window, self.size, self.dim, self.heads
        n = w * w
        shortcut = x
        h = self.norm1(x)
        h = h.reshape(b, s // w, w, s // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)
        bw = h.shape[0]
        qkv = self.qkv(h).reshape(bw, n, 3, nh, self.hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = torch.matmul(q * self.hd ** -0.5, k.transpose(-2, -1))
        bias = torch.index_select(self.table, 0, self.rel_index.reshape(-1))
        bias = bias.reshape(n, n, nh).permute(2, 0, 1)
        att = torch.softmax(att + bias[None], dim=-1)
        h = torch.matmul(att, v).transpose(1, 2).reshape(bw, n, c)
        h = self.proj(h)
        h = h.reshape(b, s // w, s // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, s, s, c)
        x = shortcut + h
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class DenseNetLike(nn.Module):
    """Conv stem, a dense block of two BN-ReLU-conv layers concatenated along channels,
    a 1x1 transition conv with average pooling, a linear head."""

    def __init__(self, growth: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, growth, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8 + growth)
        self.conv2 = nn.Conv2d(8 + growth, growth, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(8 + 2 * growth)
        self.trans = nn.Conv2d(8 + 2 * growth, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat((x, self.conv1(torch.relu(self.bn1(x)))), 1)
        x = torch.cat((x, self.conv2(torch.relu(self.bn2(x)))), 1)
        x = torch.nn.functional.avg_pool2d(self.trans(torch.relu(self.bn3(x))), 2)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class EmbeddingLookup(nn.Module):
    """``nn.Embedding(10, 3)`` on int64 indices of shape [4, 5]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


class MaskedScatter(nn.Module):
    """``x.masked_scatter(mask, src)``: from_fx imports it as a cumsum, subtract, take,
    where chain (from_exported_program on TVM 0.27 does not support it)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return x.masked_scatter(mask, src)


def _randomize_bn(model: nn.Module) -> nn.Module:
    # default running stats (0, 1) and affine (1, 0) invite folding into no-ops
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n) * 0.1)
            m.running_var.copy_(torch.rand(n) + 0.5)
            m.weight.data.copy_(1.0 + 0.1 * torch.randn(n))
            m.bias.data.copy_(0.1 * torch.randn(n))
    return model


def _ids(shape: tuple[int, ...], vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, shape, dtype=torch.int64)


# name -> (module factory, example inputs factory)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple[torch.Tensor, ...]]]] = {
    "resnet": (ResNetCNN, lambda: (torch.randn(2, 3, 8, 8),)),
    "mlp": (MLP, lambda: (torch.randn(2, 16),)),
    "bert": (BertLike, lambda: (_ids((2, 8), 30), torch.ones(2, 8))),
    "llama": (LlamaLike, lambda: (_ids((2, 8), 32),)),
    "vit": (ViT, lambda: (torch.randn(2, 3, 8, 8),)),
    "swin": (SwinBlock, lambda: (torch.randn(2, 8, 8, 16),)),
    "densenet": (DenseNetLike, lambda: (torch.randn(2, 3, 8, 8),)),
    "embedding": (EmbeddingLookup, lambda: (_ids((4, 5), 10),)),
}


@functools.cache
def torch_model(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The torch module (eval mode, seeded random weights) and example inputs of `name`."""
    make, inputs = MODELS[name]
    torch.manual_seed(0)
    model = _randomize_bn(make()).eval()
    return model, inputs()


# --------------------------------------------------------------------------- routes


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    reg = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = reg.level
    reg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        reg.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _num_input(mod: tvm.IRModule) -> int:
    main = mod["main"]
    if main.attrs is not None and "num_input" in main.attrs:
        return int(main.attrs["num_input"])
    return len(main.params)


def _fx(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tvm.IRModule:
    from tvm.relax.frontend.torch import from_fx

    gm = torch.fx.symbolic_trace(model)
    info = [(tuple(x.shape), str(x.dtype).removeprefix("torch.")) for x in inputs]
    mod = from_fx(gm, info)
    return relax.transform.FoldConstant()(mod)


def fx_import(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tvm.IRModule:
    """`model` through the ``fx`` route (symbolic_trace, from_fx, FoldConstant)."""
    with _quiet():
        return _fx(model, inputs)


def _ep(model: nn.Module, inputs: tuple[torch.Tensor, ...], params: bool) -> tvm.IRModule:
    from tvm.relax.frontend.torch import from_exported_program

    ep = torch.export.export(model, inputs, strict=False)
    mod = from_exported_program(ep, keep_params_as_input=params)
    if params:
        # the weight values sit in main's "params" attribute: the test needs only shapes
        mod, _ = relax.frontend.detach_params(mod)
    return mod


def _onnx(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tvm.IRModule:
    from tvm.relax.frontend.onnx import from_onnx

    names = [f"in{i}" for i in range(len(inputs))]
    prog = torch.onnx.export(model, inputs, dynamo=True, input_names=names,
                             output_names=["out"], opset_version=18)
    return from_onnx(prog.model_proto, keep_params_in_input=False)


@functools.cache
def _build(name: str, route: str) -> LetterModel | str:
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r} (routes: {', '.join(ROUTES)})")
    model, inputs = torch_model(name)
    try:
        with _quiet():
            if route == "fx":
                mod = _fx(model, inputs)
            elif route == "ep":
                mod = _ep(model, inputs, params=False)
            elif route == "ep_params":
                mod = _ep(model, inputs, params=True)
            else:
                mod = _onnx(model, inputs)
    except Exception as e:  # an importer's failure: reported as a skip with its reason
        return f"{route} import of {name} fails on TVM {tvm.__version__}: {_first_line(e)}"
    return LetterModel(name, route, mod, _num_input(mod))


def build(name: str, route: str) -> LetterModel:
    """`name` imported by `route` (cached per process); RouteUnsupported when the
    importer fails, with its error's first line."""
    got = _build(name, route)
    if isinstance(got, str):
        raise RouteUnsupported(got)
    return got
