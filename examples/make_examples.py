"""Regenerate the bundled example models (`cnn.json`, `transformer.json`).

Both are tiny torch models with fixed random weights (`torch.manual_seed(0)`), exported
with `torch.export`, imported with `tvm.relax.frontend.torch.from_exported_program`
(weights bound as constants) and saved with `tvm.ir.save_json`, so `msc-rules` can run
without torch installed:

    PYTHONPATH=. python examples/make_examples.py        # writes examples/*.json

The batch dimension (and the transformer's sequence length) is symbolic.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import tvm
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent


class SmallCNN(nn.Module):
    """conv-bn-relu stem, maxpool, one residual block, a downsampling conv, pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.stem(x))))
        y = self.conv2(torch.relu(self.conv1(x)))
        x = torch.relu(x + y)
        x = torch.relu(self.down(x))
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)


class Block(nn.Module):
    """A pre-norm transformer block: multi-head self-attention and a GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.reshape(b, s, h, d // h).transpose(1, 2)
        k = k.reshape(b, s, h, d // h).transpose(1, 2)
        v = v.reshape(b, s, h, d // h).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // h) ** -0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class SmallTransformer(nn.Module):
    """Token + position embeddings, one block, a final norm and an LM head."""

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, max_len: int = 16) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.block = Block(dim, heads)
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        x = self.tok(ids) + self.pos(pos)
        return self.head(self.ln(self.block(x)))


def _import(model: nn.Module, example: torch.Tensor, dynamic: dict[int, object]) -> tvm.IRModule:
    from tvm.relax.frontend.torch import from_exported_program

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model.eval(), (example,), dynamic_shapes=(dynamic,), strict=False)
        return from_exported_program(ep)


def build() -> dict[str, tvm.IRModule]:
    """The example modules by file stem."""
    from torch.export import Dim

    torch.manual_seed(0)
    cnn = SmallCNN()
    with torch.no_grad():  # non-trivial batch-norm statistics
        cnn.bn.running_mean.uniform_(-0.1, 0.1)
        cnn.bn.running_var.uniform_(0.5, 1.5)
    batch = Dim("batch", min=2)
    mods = {"cnn": _import(cnn, torch.randn(2, 3, 16, 16), {0: batch})}
    torch.manual_seed(0)
    seq = Dim("seq", min=2, max=16)
    mods["transformer"] = _import(
        SmallTransformer(), torch.randint(0, 64, (2, 8)), {0: Dim("batch", min=2), 1: seq}
    )
    return mods


def main(out_dir: Path = HERE) -> int:
    for stem, mod in build().items():
        path = out_dir / f"{stem}.json"
        path.write_text(tvm.ir.save_json(mod))
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
