"""Small torch models for the channel-group tests, imported with from_exported_program
(static shapes, weights bound as constants), each with a random input."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import tvm
from models import _randomize_bn
from tvm.relax.frontend.torch import from_exported_program


class ConvBiasNet(torch.nn.Module):
    """Conv biases, batch norm, a residual add, flatten into a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = torch.nn.Conv2d(8, 6, 1)
        self.fc = torch.nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.c1(x)))
        y = y + self.c2(y)
        y = torch.relu(self.c3(y))
        return self.fc(torch.flatten(y, 1))


class DenseNet(torch.nn.Module):
    """DenseNet-like: each layer's output is concatenated onto its input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.l1 = torch.nn.Sequential(torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                      torch.nn.Conv2d(8, 4, 3, padding=1))
        self.l2 = torch.nn.Sequential(torch.nn.BatchNorm2d(12), torch.nn.ReLU(),
                                      torch.nn.Conv2d(12, 4, 3, padding=1))
        self.trans = torch.nn.Conv2d(16, 6, 1)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        x = torch.relu(self.trans(x))
        return self.fc(x.mean((2, 3)))


TORCH_MODELS: dict[str, torch.nn.Module] = {}
"""The torch models the builders imported, by builder name (for Torch-Pruning)."""


def export(model: torch.nn.Module, x: torch.Tensor, name: str = "") -> tvm.IRModule:
    """torch.export + from_exported_program (weights bound as constants)."""
    if name:
        TORCH_MODELS[name] = model
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model.eval(), (x,), strict=False)
        return from_exported_program(ep)


@functools.cache
def conv_bias_net() -> tuple[tvm.IRModule, np.ndarray]:
    """ConvBiasNet on [2, 3, 4, 4]."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    return export(_randomize_bn(ConvBiasNet()), x, "conv_bias_net"), x.numpy()


@functools.cache
def dense_net() -> tuple[tvm.IRModule, np.ndarray]:
    """DenseNet on [2, 3, 6, 6]."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    return export(_randomize_bn(DenseNet()), x, "dense_net"), x.numpy()


class DepthwiseNet(torch.nn.Module):
    """MobileNet-like: expand 1x1, depthwise 3x3, squeeze-excite, project 1x1, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.expand = torch.nn.Conv2d(4, 8, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.se1 = torch.nn.Conv2d(8, 2, 1)
        self.se2 = torch.nn.Conv2d(2, 8, 1)
        self.project = torch.nn.Conv2d(8, 4, 1, bias=False)
        self.grouped = torch.nn.Conv2d(4, 4, 1, groups=2, bias=False)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.nn.functional.relu6(self.bn(self.expand(x)))
        y = torch.nn.functional.hardswish(self.dw(y))
        s = torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = x + self.project(y * s)
        return self.fc(self.grouped(y).mean((2, 3)))


@functools.cache
def depthwise_net() -> tuple[tvm.IRModule, np.ndarray]:
    """DepthwiseNet on [2, 3, 4, 4]."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    return export(_randomize_bn(DepthwiseNet()), x, "depthwise_net"), x.numpy()


class GQADecoder(torch.nn.Module):
    """Llama-like block: RMSNorm, grouped-query attention (4 query heads, 2 kv heads,
    RoPE, causal mask), SiLU-gated MLP, residuals, an lm head."""

    def __init__(self, dim: int = 32, heads: int = 4, kv_heads: int = 2,
                 hidden: int = 48, vocab: int = 16) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.embed = torch.nn.Embedding(vocab, dim)
        self.n1 = torch.nn.Parameter(torch.rand(dim) + 0.5)
        self.n2 = torch.nn.Parameter(torch.rand(dim) + 0.5)
        self.q = torch.nn.Linear(dim, heads * self.hd, bias=False)
        self.k = torch.nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.v = torch.nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.o = torch.nn.Linear(heads * self.hd, dim, bias=False)
        self.gate = torch.nn.Linear(dim, hidden, bias=False)
        self.up = torch.nn.Linear(dim, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, dim, bias=False)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        pos = torch.arange(8.0)[:, None] * torch.rand(self.hd // 2)[None, :]
        self.register_buffer("cos", torch.cat([pos, pos], -1).cos())
        self.register_buffer("sin", torch.cat([pos, pos], -1).sin())
        self.register_buffer("mask", torch.triu(torch.full((8, 8), -1e9), 1))

    @staticmethod
    def _norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * self.cos + rot * self.sin

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, s, _ = x.shape
        return x.reshape(b, s, n, self.hd).transpose(1, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, s, _ = x.shape
        h = self._norm(x, self.n1)
        q = self._rope(self._heads(self.q(h), self.heads))
        k = self._rope(self._heads(self.k(h), self.kv_heads))
        v = self._heads(self.v(h), self.kv_heads)
        rep = self.heads // self.kv_heads
        k = k[:, :, None].expand(b, self.kv_heads, rep, s, self.hd).reshape(b, self.heads, s,
                                                                             self.hd)
        v = v[:, :, None].expand(b, self.kv_heads, rep, s, self.hd).reshape(b, self.heads, s,
                                                                             self.hd)
        att = torch.softmax(q @ k.transpose(-1, -2) / self.hd ** 0.5 + self.mask, -1)
        y = (att @ v).transpose(1, 2).reshape(b, s, -1)
        x = x + self.o(y)
        h = self._norm(x, self.n2)
        x = x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))
        return self.head(self._norm(x, self.n2))


@functools.cache
def gqa_decoder() -> tuple[tvm.IRModule, np.ndarray]:
    """GQADecoder on ids [2, 8]."""
    torch.manual_seed(0)
    ids = torch.randint(0, 16, (2, 8))
    return export(GQADecoder(), ids), ids.numpy()


class FusedQKV(torch.nn.Module):
    """GPT-2-like attention: one linear makes q, k and v (3 * dim), split into three
    and reshaped into heads; a GELU MLP whose hidden channels are chunked in two
    (a GLU); residuals."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.fc1 = torch.nn.Linear(dim, 4 * dim)
        self.fc2 = torch.nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.reshape(b, s, h, d // h).transpose(1, 2)
        k = k.reshape(b, s, h, d // h).transpose(1, 2)
        v = v.reshape(b, s, h, d // h).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // h) ** -0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, s, d))
        a, g = self.fc1(x).chunk(2, dim=-1)
        return x + self.fc2(a * torch.nn.functional.gelu(g))


class GroupedNet(torch.nn.Module):
    """ResNeXt-like: 1 < groups < channels convs (with bias and batch norm), a residual
    around the grouped block, and an NHWC flatten (permute, then flatten) into a linear:
    channel c of the last conv is every 3rd input of the linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.g1 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.g2 = torch.nn.Conv2d(8, 8, 1, groups=2)
        self.last = torch.nn.Conv2d(8, 3, 1)
        self.fc = torch.nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.g2(torch.relu(self.bn(self.g1(x))))
        x = torch.relu(self.last(x + y))
        return self.fc(x.permute(0, 2, 3, 1).flatten(1))


@functools.cache
def fused_qkv() -> tuple[tvm.IRModule, np.ndarray]:
    """FusedQKV on [2, 4, 16]."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 16)
    return export(FusedQKV(), x, "fused_qkv"), x.numpy()


@functools.cache
def grouped_net() -> tuple[tvm.IRModule, np.ndarray]:
    """GroupedNet on [2, 3, 4, 4]."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    return export(_randomize_bn(GroupedNet()), x, "grouped_net"), x.numpy()


def export_params(model: torch.nn.Module, x: torch.Tensor) -> tvm.IRModule:
    """torch.export + from_exported_program(keep_params_as_input=True): the weights are
    parameters of main, their values in its "params" attribute."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model.eval(), (x,), strict=False)
        return from_exported_program(ep, keep_params_as_input=True)


def onnx_import(model: torch.nn.Module, x: torch.Tensor) -> tvm.IRModule:
    """torch.onnx.export (static shapes) + relax.frontend.onnx.from_onnx."""
    from models import _onnx_export
    from tvm.relax.frontend.onnx import from_onnx

    proto = _onnx_export(model.eval(), x, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_onnx(proto, keep_params_in_input=False)


ONNX_MODELS = {
    "conv_bias_net": (ConvBiasNet, (2, 3, 4, 4)),
    "dense_net": (DenseNet, (2, 3, 6, 6)),
    "depthwise_net": (DepthwiseNet, (2, 3, 4, 4)),
    "fused_qkv": (FusedQKV, (2, 4, 16)),
    "grouped_net": (GroupedNet, (2, 3, 4, 4)),
}


@functools.cache
def onnx_model(name: str) -> tuple[tvm.IRModule, np.ndarray]:
    """One of the small CNNs (or the GQA decoder) through ONNX."""
    torch.manual_seed(0)
    if name == "gqa_decoder":
        ids = torch.randint(0, 16, (2, 8))
        return onnx_import(GQADecoder(), ids), ids.numpy()
    cls, shape = ONNX_MODELS[name]
    x = torch.randn(*shape)
    return onnx_import(_randomize_bn(cls()), x), x.numpy()
