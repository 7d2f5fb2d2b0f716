"""int8 weights for a loaded torch model: int8 weights per output channel, activations per token.

Every ``nn.Linear`` becomes an ``Int8Linear``: int8 weights with a scale per output channel, each token
scaled to an absolute maximum of 1 before torch's dynamic int8 linear, so a token's result does not
depend on its batch. Why per token, and the tied output layer: docs/internals.md, "Weights and
runtimes". torch's quantized ops are deprecated but shipped; ``tests/fast/test_precision.py`` watches.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["Int8Linear", "quantize_int8", "quantize_rows", "pack_layers", "use_quantized_engine", "QUANTIZED_ENGINE"]

QUANTIZED_ENGINE = "x86"  # fbgemm with oneDNN where it is faster: torch's default for x86 CPUs
MAX_SLICE_ROWS = 32768  # fbgemm packs larger matrices far slower per row (``pack_layers``)
_TINY = 1e-6  # a row of zeros (padding) keeps a scale of 1e-6 instead of dividing by zero


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` as int8 rows with one fp64 scale each (symmetric), padded with the two zero columns
    that meet the +1 and -1 ``Int8Linear.forward`` appends to every input row. What the store's int8
    variant keeps (``engine.variants``), and what ``pack_layers`` packs. A slice of rows at a time, so
    the temporaries of a large matrix (the output layer) stay small."""
    weight = weight.detach()
    scales = torch.empty(weight.shape[0], dtype=torch.float64)
    rows = torch.empty(weight.shape[0], weight.shape[1] + 2, dtype=torch.int8)
    for start in range(0, weight.shape[0], MAX_SLICE_ROWS):
        part = torch.nn.functional.pad(weight[start : start + MAX_SLICE_ROWS].to(torch.float32), (0, 2))
        part_scales = (part.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.float64)
        rows[start : start + MAX_SLICE_ROWS] = torch.clamp(torch.round(part / part_scales.unsqueeze(1)), -128, 127)
        scales[start : start + MAX_SLICE_ROWS] = part_scales
    return rows, scales


def _pack_slice(rows: torch.Tensor, scales: torch.Tensor):
    zeros = torch.zeros(rows.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():  # the deprecation notices: the module doc says why
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        quantized = torch._make_per_channel_quantized_tensor(rows, scales, zeros, 0)
        return torch.ops.quantized.linear_prepack(quantized)


def pack_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple]:
    """Each layer's int8 rows and scales (``quantize_rows``) as fbgemm's packed matrices, for
    ``linear_dynamic``: a tuple of packed slices of at most ``MAX_SLICE_ROWS`` rows per layer.

    Packing (fbgemm reorders a matrix for its kernels) is what a load from the store's int8 variant
    still pays, so it is made cheap: slices, because fbgemm packs a matrix of more than some 32 k rows
    far slower per row (Qwen2.5's 151936-row output layer: 5.8 s whole, 1.9 s in slices of 32 k, at the
    same speed of use); and every slice on a thread of its own (the packing runs outside the GIL:
    twice as fast on two cores). Packed directly: torch.ao's ``DynamicLinear`` module would first pack
    a zero matrix of the same size."""
    jobs = [(index, rows[start : start + MAX_SLICE_ROWS], scales[start : start + MAX_SLICE_ROWS])
            for index, (rows, scales) in enumerate(layers) for start in range(0, rows.shape[0], MAX_SLICE_ROWS)]
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="int8-pack") as pool:
        packed = list(pool.map(lambda job: _pack_slice(job[1], job[2]), jobs))
    slices: list[list] = [[] for _ in layers]
    for (index, _, _), one in zip(jobs, packed):
        slices[index].append(one)
    return [tuple(s) for s in slices]


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights (a scale per output channel) and int8 inputs scaled per token."""

    def __init__(self, packed: tuple, in_features: int, out_features: int, bias: torch.Tensor | None = None,
                 tied_weight: torch.nn.Parameter | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.packed = packed  # slices of rows (``pack_layers``), their outputs side by side
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        if tied_weight is not None:
            self.weight = tied_weight  # the fp32 embedding table this output layer shares (docs/internals.md)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, tied_weight: torch.nn.Parameter | None = None) -> "Int8Linear":
        """One float layer, quantized and packed (``quantize_int8`` does a whole model's layers at once)."""
        (slices,) = pack_layers([quantize_rows(linear.weight)])
        return cls(slices, linear.in_features, linear.out_features, linear.bias, tied_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=_TINY)
        # Every row spans exactly [-1, 1]: scaled to its own maximum, plus a +1 and a -1 column (which
        # meet zero weights). So the one range torch's kernel finds over the whole input is the same for
        # any batch, and a token's result never depends on the other tokens beside it: a chat decoded
        # in a batch, or a text scored after a cached prefix, gets what it would get alone.
        ends = x.new_tensor([1.0, -1.0]).expand(*x.shape[:-1], 2)
        # reduce_range: 7-bit inputs, so AVX2's 16-bit intermediate sums cannot saturate (torch's own choice).
        rows = torch.cat([x / scale, ends], dim=-1)
        parts = [torch.ops.quantized.linear_dynamic(rows, packed, True) for packed in self.packed]
        y = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)) * scale
        return y if self.bias is None else y + self.bias

    def dequantized_rows(self, rows: list[int]) -> torch.Tensor:
        """Some rows of the weights as fp32 (rounded to int8): what the label scorer needs of an untied
        output layer. A slice at a time, never the whole matrix (545 MB as fp32 for Qwen2.5's)."""
        start, picked = 0, {}
        for packed in self.packed:
            weight = torch.ops.quantized.linear_unpack(packed)[0]
            ints, scales = weight.int_repr(), weight.q_per_channel_scales()
            for row in rows:
                if start <= row < start + weight.shape[0]:
                    # without the two zero columns
                    picked[row] = ints[row - start, : self.in_features].float() * float(scales[row - start])
            start += weight.shape[0]
        return torch.stack([picked[row] for row in rows])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel, per token"


def use_quantized_engine() -> None:
    """Make packed weights for fbgemm (the engine ``linear_dynamic`` runs fastest with here)."""
    if QUANTIZED_ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = QUANTIZED_ENGINE


def quantize_int8(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` by an ``Int8Linear``, in place; returns how many."""
    use_quantized_engine()
    embedding = model.get_input_embeddings().weight
    found = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if type(child) is torch.nn.Linear]
    packed = pack_layers([quantize_rows(child.weight) for _, _, child in found])
    for (parent, name, child), slices in zip(found, packed):
        tied = child.weight if child.weight is embedding else None
        setattr(parent, name, Int8Linear(slices, child.in_features, child.out_features, child.bias, tied))
    return len(found)
