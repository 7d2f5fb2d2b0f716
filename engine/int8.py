"""int8 weights for a loaded torch model: int8 weights per output channel, activations per token.

Every ``nn.Linear`` (the output layer too) becomes an ``Int8Linear``: its
weights int8 with one scale per output channel, and each input row (one
token) scaled to an absolute maximum of 1 before torch's dynamic int8 linear
(fbgemm/oneDNN) quantizes it, then scaled back. Since the int8 products are
summed exactly (int32), a token's result does not depend on what else is in
the batch. A quarter of fp32's bytes per decode step, and the matrix
products run on the CPU's int8 dot products (AVX2, VNNI).

Why per token: torch's dynamic quantization picks *one* scale for the whole
input, every token of every row of a batch. Qwen's activations have tokens
whose values are hundreds of times the others' (the first tokens of a
prompt), so one scale leaves the ordinary tokens a few int8 steps: that cost
2.4-5.7 points of sentiment accuracy and changed chat answers. Scaling each
token to the same range first makes the one scale right for every token
(measured: sentiment within half a point of fp32, ``docs/benchmarks.md``),
at the cost of two element-wise passes over the input.

The output layer of a model whose output layer *is* its embedding table
(tied, as in Qwen2.5) keeps that fp32 table as its ``weight``: the table
stays in memory anyway for the input lookups, so the label rows the scorer
reads are exact at no cost. The embedding table itself stays fp32 (a lookup
reads only the rows of the tokens seen).

torch's quantized tensors and ``quantized::linear_dynamic`` are deprecated in
favour of the separate torchao package; they are still shipped and work in
torch 2.13. They are used here and nowhere else, and
``tests/fast/test_precision.py`` fails loudly the day they go away.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["Int8Linear", "quantize_int8", "QUANTIZED_ENGINE"]

QUANTIZED_ENGINE = "x86"  # fbgemm with oneDNN where it is faster: torch's default for x86 CPUs
_TINY = 1e-6  # a row of zeros (padding) keeps a scale of 1e-6 instead of dividing by zero


def _pack(weight: torch.Tensor):
    """``weight`` as fbgemm's packed int8 matrix, symmetric per output channel (for ``linear_dynamic``).

    Packed directly: torch.ao's ``DynamicLinear`` module would first pack a zero matrix of the same
    size, which doubles the cost of the load's slowest part (seconds for the output layer)."""
    # Two zero columns: they meet the +1 and -1 that Int8Linear.forward appends to every input row.
    weight = torch.nn.functional.pad(weight.detach().to(torch.float32), (0, 2))
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.float64)
    zeros = torch.zeros(weight.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():  # the deprecation notices: the module doc says why
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.ops.quantized.linear_prepack(torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8))


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights (a scale per output channel) and int8 inputs scaled per token."""

    def __init__(self, linear: torch.nn.Linear, tied_weight: torch.nn.Parameter | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = _pack(linear.weight)
        bias = linear.bias
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        if tied_weight is not None:
            self.weight = tied_weight  # the fp32 embedding table this output layer shares (module doc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=_TINY)
        # Every row spans exactly [-1, 1]: scaled to its own maximum, plus a +1 and a -1 column (which
        # meet zero weights). So the one range torch's kernel finds over the whole input is the same for
        # any batch, and a token's result never depends on the other tokens beside it: a chat decoded
        # in a batch, or a text scored after a cached prefix, gets what it would get alone.
        ends = x.new_tensor([1.0, -1.0]).expand(*x.shape[:-1], 2)
        # reduce_range: 7-bit inputs, so AVX2's 16-bit intermediate sums cannot saturate (torch's own choice).
        y = torch.ops.quantized.linear_dynamic(torch.cat([x / scale, ends], dim=-1), self.packed, True) * scale
        return y if self.bias is None else y + self.bias

    def dequantized_weight(self) -> torch.Tensor:
        """The weights as fp32, rounded to int8: for a caller that needs rows of an untied output layer."""
        weight, _ = torch.ops.quantized.linear_unpack(self.packed)
        return weight.dequantize()[:, : self.in_features]  # without the two zero columns

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel, per token"


def quantize_int8(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` by an ``Int8Linear``, in place; returns how many."""
    if QUANTIZED_ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = QUANTIZED_ENGINE
    embedding = model.get_input_embeddings().weight
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            tied = child.weight if child.weight is embedding else None
            setattr(parent, name, Int8Linear(child, tied_weight=tied))
            replaced += 1
    return replaced
