"""The networks (flax.linen): the MLP of the seed talks and a residual MLP.

MLP:           f_θ = A_{m+1} ∘ σ ∘ A_m ∘ … ∘ σ ∘ A_1,     A_j x = W_j x + b_j
Residual MLP:  h_0 = A_0 x,  h_{j+1} = h_j + A''_j σ(A'_j LayerNorm(h_j)),  f_θ = A_out σ(h_m)

The skip connections keep gradients alive through deep stacks (the residual building block of
the third seed talk). Parameters are float32; ``dtype`` sets the compute dtype of the layers
(bfloat16 on GPUs), and the output is returned in float32.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "softplus": nn.softplus,
    "elu": nn.elu,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class MLP(nn.Module):
    widths: Sequence[int]
    outputs: int
    activation: str = "tanh"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        act, dtype = ACTIVATIONS[self.activation], DTYPES[self.dtype]
        for width in self.widths:
            x = act(nn.Dense(width, dtype=dtype)(x))
        return nn.Dense(self.outputs, dtype=dtype)(x).astype(jnp.float32)


class ResidualMLP(nn.Module):
    width: int
    depth: int
    outputs: int
    activation: str = "gelu"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        act, dtype = ACTIVATIONS[self.activation], DTYPES[self.dtype]
        h = nn.Dense(self.width, dtype=dtype)(x)
        for _ in range(self.depth):
            z = nn.LayerNorm(dtype=dtype)(h)
            z = nn.Dense(self.width, dtype=dtype)(act(nn.Dense(self.width, dtype=dtype)(z)))
            h = h + z
        return nn.Dense(self.outputs, dtype=dtype)(act(h)).astype(jnp.float32)


def build_network(network: dict, outputs: int) -> nn.Module:
    """The network a (checked) spec's ``network`` section describes, with ``outputs`` outputs."""
    if network["kind"] == "residual_mlp":
        return ResidualMLP(width=network["widths"][0], depth=len(network["widths"]), outputs=outputs,
                           activation=network["activation"], dtype=network["dtype"])
    return MLP(widths=tuple(network["widths"]), outputs=outputs, activation=network["activation"],
               dtype=network["dtype"])


def matmul_flops_per_sample(network: dict, features: int, outputs: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass; a training step costs about 3x."""
    widths = network["widths"]
    if network["kind"] == "residual_mlp":
        w = widths[0]
        macs = features * w + len(widths) * 2 * w * w + w * outputs
    else:
        dims = [features, *widths, outputs]
        macs = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return 2 * macs
