"""Parameter and operation counts of a Keras model, from Larq's model profile.

Conventions of the BNN literature (Bi-Real Net, ReActNet): a MAC whose input
and kernel are both 1-bit is a binary op (BOP); every other MAC of a conv or
dense layer is a floating-point op (FLOP); OPs = FLOPs + BOPs / 64.
"""
from __future__ import annotations

from typing import Any, Dict

import larq as lq


def model_costs(model) -> Dict[str, Any]:
    """Params (binary / real), binary and float MACs, and OPs of ``model``."""
    profile = lq.models.ModelProfile(model)
    total_params = int(model.count_params())
    binary_params = int(profile.weight_count(bitwidth=1))
    macs = {}
    for layer in profile.layer_profiles:
        for op in getattr(layer, "op_profiles", []):
            macs[op.precision] = macs.get(op.precision, 0) + int(op.n)
    binary_macs = macs.pop(1, 0)
    float_macs = sum(macs.values())
    return {
        "input_shape": [int(d) for d in model.input_shape[1:]],
        "params": total_params,
        "binary_params": binary_params,
        "real_params": total_params - binary_params,
        "binary_macs": binary_macs,
        "float_macs": float_macs,
        "ops": float_macs + binary_macs / 64.0,
        # weights as deployed: 1 bit per binary weight, 32 bits per real one
        "model_size_bytes": (binary_params + 32 * (total_params - binary_params)) / 8.0,
    }
