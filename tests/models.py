"""Small real-world-shaped Relax modules for the test suite.

Every builder makes a tiny model with random weights (``torch.manual_seed(0)``, no
downloads), exports it with ``torch.export`` and imports it into Relax with
``tvm.relax.frontend.torch.from_exported_program`` (``onnx_cnn`` goes through ONNX and
``tvm.relax.frontend.onnx.from_onnx``). Results are cached per arguments.

Arguments shared by all builders:

``dynamic``
    When True the batch dimension (and, for sequence models, the sequence length) is
    exported symbolic with ``torch.export.Dim(min=2)``; the names of the symbolic vars
    TVM created are reported in ``ImportedModel.batch_sym`` / ``seq_sym``. These names
    come from torch (``s77``, ``s23``, ...) or from the ONNX ``dim_param`` (``batch``);
    read them from the dataclass, never hard-code them.
``bind_params``
    When True the weights are constants (``tvm.ir.GenericConst``) inside ``main``.
    When False they are trailing parameters of ``main`` (``num_input`` attribute says
    how many leading params are real inputs) and their values are returned in
    ``ImportedModel.params`` (name -> numpy array, in parameter order).

Usage (tests/ on sys.path)::

    from models import resnet18_like, BUILDERS
    m = resnet18_like()
    m.mod["main"]
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import tvm
from tvm import relax

__all__ = [
    "ImportedModel",
    "BUILDERS",
    "SLOW_BUILDERS",
    "tiny_mlp",
    "resnet18_like",
    "mobilenet_like",
    "unet_like",
    "bert_like",
    "llama_like",
    "gpt2_like",
    "vit_like",
    "onnx_cnn",
    "op_census",
    "count_constants",
    "count_weight_constants",
]


@dataclass(frozen=True, eq=False)
class ImportedModel:
    """An imported model plus what tests need to know about it.

    ``eq=False`` keeps identity hashing (numpy arrays and torch modules are not
    value-hashable).
    """

    mod: tvm.IRModule
    batch_sym: str | None
    seq_sym: str | None
    example_inputs: tuple  # tuple[np.ndarray, ...], in the order of main's inputs
    torch_module: torch.nn.Module
    name: str = ""
    # Only for bind_params=False: weight values keyed by main's parameter names.
    params: dict = field(default_factory=dict)
    # Names of main's parameters that are model inputs (not weights).
    input_names: tuple = ()


# --------------------------------------------------------------------------- helpers

_BATCH = 2  # example batch (>= 2: torch.export specializes sizes 0 and 1)
_SEQ = 8  # example sequence length
# Sequence models hold 64 positions, so the symbolic seq dim is bounded by it.
_SEQ_MAX = 64


def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def _dim(name, max_=None):
    from torch.export import Dim

    if max_ is None:
        return Dim(name, min=2)
    return Dim(name, min=2, max=max_)


def _cached_builder(fn):
    """lru_cache keyed on the normalized (dynamic, bind_params), so ``b()``,
    ``b(True)`` and ``b(dynamic=True, bind_params=True)`` share one entry.
    ``b.__wrapped__`` is the uncached builder, ``b.cache_clear()`` empties the cache."""
    cached = functools.lru_cache(maxsize=None)(fn)

    @functools.wraps(fn)
    def builder(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
        return cached(bool(dynamic), bool(bind_params))

    builder.cache_clear = cached.cache_clear
    builder.cache_info = cached.cache_info
    return builder


@contextlib.contextmanager
def _quiet():
    """Silence the (harmless) deprecation chatter of torch.export / transformers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _sym_name(value):
    """Name of a symbolic dim (``tvm.ir.expr.Var`` in TVM 0.27), None for a constant."""
    if isinstance(value, tvm.ir.expr.Var):
        return str(value.name)
    return None


def _find_syms(mod, batch_pos=(0, 0), seq_pos=None):
    """Read the symbolic var names at (param index, axis) positions of main's inputs."""
    main = mod["main"]

    def at(pos):
        if pos is None:
            return None
        pi, axis = pos
        return _sym_name(main.params[pi].ty.shape.values[axis])

    return at(batch_pos), at(seq_pos)


def _from_ep(torch_module, args, dynamic_shapes, bind_params):
    """torch.export + from_exported_program, weights bound or kept as inputs."""
    from tvm.relax.frontend.torch import from_exported_program

    with _quiet(), torch.no_grad():
        ep = torch.export.export(
            torch_module, tuple(args), dynamic_shapes=dynamic_shapes, strict=False
        )
        # keep_params_as_input=False (default): weights become GenericConst in main.
        mod = from_exported_program(ep, keep_params_as_input=not bind_params)
    params = {}
    if not bind_params:
        # The frontend stores the weight values in main's "params" attribute; detach
        # them so the module carries no tensors in attributes.
        mod, detached = relax.frontend.detach_params(mod)
        main = mod["main"]
        num_input = int(main.attrs["num_input"])
        names = [p.name for p in main.params[num_input:]]
        values = detached.get("main", [])
        params = {n: v.numpy() for n, v in zip(names, values, strict=True)}
    return mod, params


def _finish(name, mod, torch_module, inputs, *, params, batch_pos, seq_pos, dynamic):
    batch_sym, seq_sym = _find_syms(mod, batch_pos, seq_pos) if dynamic else (None, None)
    main = mod["main"]
    n_in = (
        int(main.attrs["num_input"])
        if main.attrs and "num_input" in main.attrs
        else len(main.params)
    )
    return ImportedModel(
        mod=mod,
        batch_sym=batch_sym,
        seq_sym=seq_sym,
        example_inputs=tuple(
            x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            for x in inputs
        ),
        torch_module=torch_module,
        name=name,
        params=params,
        input_names=tuple(p.name for p in main.params[:n_in]),
    )


def _import_torch(name, model, inputs, dyn_axes, *, dynamic, bind_params, seq=False):
    """Common path: ``dyn_axes`` is, per input, the dict {axis: "batch"|"seq"}."""
    model = model.eval()
    dims = {}
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = []
        for axes in dyn_axes:
            spec = {}
            for axis, kind in axes.items():
                if kind not in dims:
                    dims[kind] = _dim(kind, max_=_SEQ_MAX if kind == "seq" else None)
                spec[axis] = dims[kind]
            dynamic_shapes.append(spec or None)
        dynamic_shapes = tuple(dynamic_shapes)
    mod, params = _from_ep(model, inputs, dynamic_shapes, bind_params)
    seq_pos = None
    if seq:
        seq_pos = next(
            (i, a) for i, axes in enumerate(dyn_axes) for a, k in axes.items() if k == "seq"
        )
    batch_pos = next(
        (i, a) for i, axes in enumerate(dyn_axes) for a, k in axes.items() if k == "batch"
    )
    return _finish(
        name,
        mod,
        model,
        inputs,
        params=params,
        batch_pos=batch_pos,
        seq_pos=seq_pos,
        dynamic=dynamic,
    )


def _hf_outputs(out, n_out):
    return out[0] if n_out == 1 else tuple(out[:n_out])


class _HFIds(torch.nn.Module):
    """HF model wrapper: input_ids in, plain tensor(s) out, no KV cache."""

    def __init__(self, model, n_out=1, **call_kwargs):
        super().__init__()
        self.model, self.n_out, self.call_kwargs = model, n_out, call_kwargs

    def forward(self, input_ids):
        return _hf_outputs(
            self.model(input_ids=input_ids, return_dict=False, **self.call_kwargs), self.n_out
        )


class _HFIdsMask(_HFIds):
    def forward(self, input_ids, attention_mask):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            return_dict=False,
            **self.call_kwargs,
        )
        return _hf_outputs(out, self.n_out)


class _HFPixels(_HFIds):
    def forward(self, pixel_values):
        return _hf_outputs(
            self.model(pixel_values=pixel_values, return_dict=False, **self.call_kwargs), self.n_out
        )


# --------------------------------------------------------------------------- plain torch


class _MLP(torch.nn.Module):
    def __init__(self, dim=32, hidden=64):
        super().__init__()
        self.fc1 = torch.nn.Linear(dim, hidden)
        self.fc2 = torch.nn.Linear(hidden, dim)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


@_cached_builder
def tiny_mlp(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """x[B,32] -> x + fc2(relu(fc1(x))). The quickest real module (~0.3 s)."""
    _seed()
    model = _MLP()
    x = torch.randn(_BATCH, 32)
    return _import_torch(
        "tiny_mlp", model, (x,), ({0: "batch"},), dynamic=dynamic, bind_params=bind_params
    )


class _BasicBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + identity)


class _ResNet(torch.nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        self.layer1 = torch.nn.Sequential(_BasicBlock(16, 16), _BasicBlock(16, 16))
        self.layer2 = torch.nn.Sequential(_BasicBlock(16, 32, stride=2), _BasicBlock(32, 32))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _randomize_bn(model):
    """Non-trivial BN statistics so batch_norm is not an identity."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@_cached_builder
def resnet18_like(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """conv-bn-relu stem, maxpool, 4 BasicBlocks (one downsample), avgpool, fc. [B,3,32,32]."""
    _seed()
    model = _randomize_bn(_ResNet())
    x = torch.randn(_BATCH, 3, 32, 32)
    return _import_torch(
        "resnet18_like", model, (x,), ({0: "batch"},), dynamic=dynamic, bind_params=bind_params
    )


class _InvertedResidual(torch.nn.Module):
    """MobileNetV3-style: expand 1x1, depthwise 3x3, squeeze-excite, project 1x1."""

    def __init__(self, cin, cout, expand, stride, act, se):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = torch.nn.Sequential(
            torch.nn.Conv2d(cin, hid, 1, bias=False), torch.nn.BatchNorm2d(hid), act()
        )
        self.dw = torch.nn.Sequential(
            torch.nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
            torch.nn.BatchNorm2d(hid),
            act(),
        )
        self.se = None
        if se:
            self.se = torch.nn.Sequential(
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Conv2d(hid, hid // 4, 1),
                torch.nn.ReLU(),
                torch.nn.Conv2d(hid // 4, hid, 1),
                torch.nn.Hardsigmoid(),
            )
        self.project = torch.nn.Sequential(
            torch.nn.Conv2d(hid, cout, 1, bias=False), torch.nn.BatchNorm2d(cout)
        )

    def forward(self, x):
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = y * self.se(y)
        y = self.project(y)
        return x + y if self.use_res else y


class _MobileNet(torch.nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False),
            torch.nn.BatchNorm2d(16),
            torch.nn.Hardswish(),
        )
        self.blocks = torch.nn.Sequential(
            _InvertedResidual(16, 16, 2, 1, torch.nn.ReLU6, se=False),
            _InvertedResidual(16, 24, 3, 2, torch.nn.ReLU6, se=False),
            _InvertedResidual(24, 24, 3, 1, torch.nn.Hardswish, se=True),
        )
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(24, 64, 1, bias=False), torch.nn.BatchNorm2d(64), torch.nn.Hardswish()
        )
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(64, 32),
            torch.nn.Hardswish(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(32, num_classes),
        )

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        x = self.pool(x).flatten(1)
        return self.classifier(x)


@_cached_builder
def mobilenet_like(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """Depthwise-separable CNN (grouped conv, BN, relu6, hardswish, SE). [B,3,32,32]."""
    _seed()
    model = _randomize_bn(_MobileNet())
    x = torch.randn(_BATCH, 3, 32, 32)
    return _import_torch(
        "mobilenet_like", model, (x,), ({0: "batch"},), dynamic=dynamic, bind_params=bind_params
    )


class _DoubleConv(torch.nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            torch.nn.Conv2d(cin, cout, 3, padding=1),
            torch.nn.BatchNorm2d(cout),
            torch.nn.ReLU(),
            torch.nn.Conv2d(cout, cout, 3, padding=1),
            torch.nn.ReLU(),
        )


class _UNet(torch.nn.Module):
    def __init__(self, cin=3, nclass=2, c=8):
        super().__init__()
        self.inc = _DoubleConv(cin, c)
        self.down1 = _DoubleConv(c, 2 * c)
        self.down2 = _DoubleConv(2 * c, 4 * c)
        self.up1 = torch.nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.conv_up1 = _DoubleConv(4 * c, 2 * c)
        self.conv_up2 = _DoubleConv(2 * c + c, c)
        self.outc = torch.nn.Conv2d(c, nclass, 1)

    def forward(self, x):
        x1 = self.inc(x)  # c, 32
        x2 = self.down1(torch.nn.functional.max_pool2d(x1, 2))  # 2c, 16
        x3 = self.down2(torch.nn.functional.max_pool2d(x2, 2))  # 4c, 8
        y = self.conv_up1(torch.cat([self.up1(x3), x2], dim=1))  # transposed conv up
        y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")  # resize up
        y = self.conv_up2(torch.cat([y, x1], dim=1))
        return self.outc(y)


@_cached_builder
def unet_like(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """Tiny UNet: maxpool downs, ConvTranspose2d + nearest interpolate ups, concat skips."""
    _seed()
    model = _randomize_bn(_UNet())
    x = torch.randn(_BATCH, 3, 32, 32)
    return _import_torch(
        "unet_like", model, (x,), ({0: "batch"},), dynamic=dynamic, bind_params=bind_params
    )


# --------------------------------------------------------------------------- HF transformers


def _hf_seq_inputs(vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (_BATCH, _SEQ), generator=g)
    return ids


@_cached_builder
def bert_like(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """HF BertModel (2 layers, hidden 32, 2 heads) with pooler.

    Inputs: input_ids [B,S] int64, attention_mask [B,S] int64.
    Outputs: (last_hidden_state [B,S,32], pooler_output [B,32]).
    """
    from transformers import BertConfig, BertModel

    _seed()
    cfg = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=_SEQ_MAX,
        attn_implementation="eager",
    )
    with _quiet():
        model = _HFIdsMask(BertModel(cfg, add_pooling_layer=True), n_out=2)
    ids = _hf_seq_inputs(cfg.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # one padded row, so the mask matters numerically
    return _import_torch(
        "bert_like",
        model,
        (ids, mask),
        ({0: "batch", 1: "seq"}, {0: "batch", 1: "seq"}),
        dynamic=dynamic,
        bind_params=bind_params,
        seq=True,
    )


@_cached_builder
def llama_like(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """HF LlamaForCausalLM: 2 layers, hidden 64, 4 heads / 2 KV heads (GQA), RoPE,
    RMSNorm, SiLU-gated MLP, lm_head. Input ids [B,S]; output logits [B,S,128]."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _seed()
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=_SEQ_MAX * 2,
        attn_implementation="eager",
        use_cache=False,
    )
    with _quiet():
        model = _HFIds(LlamaForCausalLM(cfg), n_out=1, use_cache=False)
    ids = _hf_seq_inputs(cfg.vocab_size)
    return _import_torch(
        "llama_like",
        model,
        (ids,),
        ({0: "batch", 1: "seq"},),
        dynamic=dynamic,
        bind_params=bind_params,
        seq=True,
    )


@_cached_builder
def gpt2_like(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """HF GPT2Model: 2 layers, n_embd 32, 2 heads (Conv1D projections, causal mask).
    Input ids [B,S]; output last_hidden_state [B,S,32]."""
    from transformers import GPT2Config, GPT2Model

    _seed()
    cfg = GPT2Config(
        vocab_size=128,
        n_positions=_SEQ_MAX,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
        use_cache=False,
    )
    with _quiet():
        model = _HFIds(GPT2Model(cfg), n_out=1, use_cache=False)
    ids = _hf_seq_inputs(cfg.vocab_size)
    return _import_torch(
        "gpt2_like",
        model,
        (ids,),
        ({0: "batch", 1: "seq"},),
        dynamic=dynamic,
        bind_params=bind_params,
        seq=True,
    )


@_cached_builder
def vit_like(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """HF ViTModel: image 32, patch 8 (16 patches + CLS), hidden 32, 2 layers, 2 heads,
    with pooler. Input [B,3,32,32]; outputs ([B,17,32], [B,32]). seq_sym is None."""
    from transformers import ViTConfig, ViTModel

    _seed()
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        attn_implementation="eager",
    )
    with _quiet():
        model = _HFPixels(ViTModel(cfg, add_pooling_layer=True), n_out=2)
    x = torch.randn(_BATCH, 3, 32, 32)
    return _import_torch(
        "vit_like", model, (x,), ({0: "batch"},), dynamic=dynamic, bind_params=bind_params
    )


# --------------------------------------------------------------------------- ONNX


class _OnnxCNN(torch.nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = torch.nn.Linear(16 * 8 * 8, 32)
        self.fc2 = torch.nn.Linear(32, num_classes)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.nn.functional.avg_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.permute(0, 2, 3, 1)  # NHWC before flattening: a Transpose in the graph
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return torch.softmax(self.fc2(x), dim=-1)


def _onnx_export(model, x, dynamic):
    """torch.onnx.export with the dynamo exporter; legacy TorchScript exporter as fallback.

    Returns an ``onnx.ModelProto`` whose batch dim is the dim_param "batch" when dynamic.
    """
    reg_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    old_level = reg_logger.level
    reg_logger.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." noise
    try:
        return _onnx_export_inner(model, x, dynamic)
    finally:
        reg_logger.setLevel(old_level)


def _onnx_export_inner(model, x, dynamic):
    import onnx

    with _quiet(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        try:
            kwargs = {}
            if dynamic:
                kwargs["dynamic_shapes"] = ({0: _dim("batch")},)
            prog = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                input_names=["x"],
                output_names=["y"],
                opset_version=18,
                **kwargs,
            )
            return prog.model_proto
        except Exception:  # pragma: no cover - only when onnxscript/dynamo export breaks
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.onnx")
                torch.onnx.export(
                    model,
                    (x,),
                    path,
                    dynamo=False,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None,
                    opset_version=17,
                )
                return onnx.load(path)


@_cached_builder
def onnx_cnn(dynamic: bool = True, bind_params: bool = True) -> ImportedModel:
    """Small CNN exported to ONNX (Conv, BN, Relu, MaxPool, AveragePool, Transpose,
    Flatten/Reshape, Gemm, Softmax) and imported with relax.frontend.onnx.from_onnx.
    Input x [B,3,32,32]; output [B,10]. batch_sym is "batch" (the ONNX dim_param)."""
    from tvm.relax.frontend.onnx import from_onnx

    _seed()
    model = _randomize_bn(_OnnxCNN()).eval()
    x = torch.randn(_BATCH, 3, 32, 32)
    proto = _onnx_export(model, x, dynamic)
    with _quiet():
        # keep_params_in_input=False: initializers become GenericConst in main.
        mod = from_onnx(proto, keep_params_in_input=not bind_params)
    params = {}
    if not bind_params:
        mod, detached = relax.frontend.detach_params(mod)
        main = mod["main"]
        n_in = int(main.attrs["num_input"])
        names = [p.name for p in main.params[n_in:]]
        params = {n: v.numpy() for n, v in zip(names, detached.get("main", []), strict=True)}
    return _finish(
        "onnx_cnn", mod, model, (x,), params=params, batch_pos=(0, 0), seq_pos=None, dynamic=dynamic
    )


# --------------------------------------------------------------------------- registry

# name -> builder; every builder takes (dynamic=True, bind_params=True).
BUILDERS = {
    "tiny_mlp": tiny_mlp,
    "resnet18_like": resnet18_like,
    "mobilenet_like": mobilenet_like,
    "unet_like": unet_like,
    "onnx_cnn": onnx_cnn,
    "vit_like": vit_like,
    "gpt2_like": gpt2_like,
    "bert_like": bert_like,
    "llama_like": llama_like,
}

# Builders that take more than ~1.5 s on 2 cores (HF export + import, ONNX dynamo export).
SLOW_BUILDERS = frozenset({"onnx_cnn", "vit_like", "gpt2_like", "bert_like", "llama_like"})


# --------------------------------------------------------------------------- inspection


def _walk_function(func, ops, kinds, nested):
    body = func.body
    _walk_seq(body, ops, kinds, nested)


def _walk_seq(expr, ops, kinds, nested):
    if isinstance(expr, relax.SeqExpr):
        for block in expr.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.MatchCast):
                    kinds["MatchCast"] += 1
                    _visit_value(binding.value, ops, kinds, nested)
                    continue
                kinds["VarBinding"] += 1
                _visit_value(binding.value, ops, kinds, nested)
        _visit_value(expr.body, ops, kinds, nested, top=False)


def _visit_value(value, ops, kinds, nested, top=True):
    if isinstance(value, tvm.ir.Call):
        if top:
            kinds["Call"] += 1
        op = value.op
        if isinstance(op, tvm.ir.Op):
            ops[op.name] += 1
        elif top:
            kinds[f"Call(non-Op callee: {type(op).__name__})"] += 1
    elif isinstance(value, relax.Function):
        kinds["Function(nested)"] += 1
        nested.append(value)
        _walk_function(value, ops, kinds, nested)
    elif isinstance(value, relax.If):
        kinds["If"] += 1
        _walk_seq(value.true_branch, ops, kinds, nested)
        _walk_seq(value.false_branch, ops, kinds, nested)
    elif isinstance(value, relax.SeqExpr):
        _walk_seq(value, ops, kinds, nested)
    elif top:
        kinds[type(value).__name__] += 1


def op_census(mod: tvm.IRModule):
    """(Counter op name -> count, Counter binding kind -> count) over all Relax functions.

    Binding kinds: "VarBinding" (all), "Call", "Tuple", "TupleGetItem", "ShapeExpr",
    "MatchCast", "Function(nested)", "If", "Var", "GenericConst", ...
    """
    ops, kinds, nested = Counter(), Counter(), []
    for _gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            kinds["relax functions"] += 1
            _walk_function(func, ops, kinds, nested)
        else:
            kinds[f"non-relax functions ({type(func).__name__})"] += 1
    return ops, kinds


def _constants(mod, func_name):
    found = []
    relax.analysis.post_order_visit(
        mod[func_name], lambda e: found.append(e) if isinstance(e, tvm.ir.GenericConst) else None
    )
    # Not tvm.ir.Constant: in TVM 0.27 IntImm/FloatImm derive from it too, and
    # post_order_visit also reaches the IntImm dims inside shapes and types.
    # post_order_visit hands out fresh Python handles: dedupe on the C++ node.
    uniq = []
    for c in found:
        if not any(c.same_as(u) for u in uniq):
            uniq.append(c)
    return uniq


def count_constants(mod: tvm.IRModule, func_name: str = "main") -> int:
    """Number of distinct ``tvm.ir.GenericConst`` nodes (relax constants) in a function,
    R.const scalars included."""
    return len(_constants(mod, func_name))


def count_weight_constants(mod: tvm.IRModule, func_name: str = "main") -> int:
    """Constants with at least one dimension (the bound weights, not R.const scalars).

    A ``GenericConst`` exposes its tensor as ``.value`` (not ``.data``) and its type as ``.ty``."""
    return sum(
        1
        for c in _constants(mod, func_name)
        if isinstance(c.ty, relax.TensorType) and c.ty.ndim > 0
    )
