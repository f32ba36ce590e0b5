"""NF4 linear layers made directly with bitsandbytes, for the layers the library loaders leave unquantised.

transformers keeps T5's feed-forward output layers (`wo`, a fifth of T5-XXL)
out of 4-bit quantisation, declared per model class for fp16 overflow; in bf16
compute that reason does not apply, and left in bf16 they cost 2 GB of a 12 GB
card. They are quantised here after loading, with the same settings the loaders
use (NF4, double-quantised scales, bf16 compute). Their packed weights are stored
in bf16 words: T5's feed-forward casts its input to `wo.weight.dtype` unless
that is int8, and a uint8 store would make it cast activations to bytes.
"""

from __future__ import annotations

import torch
from torch import nn


def nf4_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, storage: torch.dtype = torch.uint8
) -> nn.Module:
    """A `Linear4bit` holding `weight` (out, in), quantised on the weight's CUDA device."""
    import bitsandbytes as bnb

    out_features, in_features = weight.shape
    layer = bnb.nn.Linear4bit(
        in_features,
        out_features,
        bias=bias is not None,
        compute_dtype=torch.bfloat16,
        quant_type="nf4",
        quant_storage=storage,
        device="meta",
    )
    layer.weight = bnb.nn.Params4bit(
        weight.to(torch.bfloat16),
        requires_grad=False,
        quant_type="nf4",
        compress_statistics=True,
        quant_storage=storage,
    ).to(weight.device)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().to(weight.device, torch.bfloat16), requires_grad=False)
    return layer


def quantize_remaining_linears(module: nn.Module, storage: torch.dtype = torch.bfloat16) -> int:
    """Replace every plain `nn.Linear` left in `module` by an NF4 layer on its device; return the count."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.is_cuda:
                setattr(parent, name, nf4_linear(child.weight.data, child.bias, storage))
                count += 1
    return count
