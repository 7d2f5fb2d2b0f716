"""int8 weights for a loaded torch model: torch's dynamic quantization, per output channel.

Every ``nn.Linear`` (the output layer too) becomes torch's dynamically
quantized linear: weights int8 with one scale per output channel, and each
input quantized to int8 on the fly, per call, so the matrix products run on
the CPU's int8 dot-product units (VNNI) through fbgemm/oneDNN. A quarter of
fp32's bytes per decode step. The embedding table stays as loaded (a lookup
reads only the rows of the tokens seen).

``torch.ao.quantization`` is deprecated in favour of the separate torchao
package; it is still shipped and works in torch 2.13. It is used here and
nowhere else, and ``tests/fast/test_precision.py`` fails loudly the day it
goes away.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["quantize_int8", "QUANTIZED_ENGINE"]

QUANTIZED_ENGINE = "x86"  # fbgemm with oneDNN where it is faster: torch's default for x86 CPUs


def quantize_int8(model: torch.nn.Module) -> int:
    """Quantize every ``nn.Linear`` of ``model`` in place; returns how many were replaced."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if QUANTIZED_ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = QUANTIZED_ENGINE
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    with warnings.catch_warnings():  # the deprecation notice, once per load: the module doc says why
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)  # torch's own C++ notice of the same deprecation
        quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return linears
