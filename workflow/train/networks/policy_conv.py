"""A network that is not an MLP: parameters -> a whole function on the grid, by 1-D convolutions.

For workflow/train/mccall-conv.yaml: (c, β) -> v(w; c, β) at every wage w of the grid at once.

    h_0 = resize(σ(A x), grid)          a coarse profile (``coarse`` points x ``channels``) from the
                                        inputs, linearly interpolated onto the grid
    h_0 <- [h_0, position on the grid]  so the convolutions know where on the grid they are
    h_{j+1} = h_j + K''_j * σ(K'_j * h_j)   residual blocks of two 1-D convolutions (width ``kernel``)
    f(x) = K_out * h_m                  one value per grid point: (batch, outputs)

``outputs`` (the grid's size) is set by the training job from the data.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class PolicyConv(nn.Module):
    outputs: int  # grid points (set from the data)
    channels: int = 32
    coarse: int = 8
    blocks: int = 3
    kernel: int = 5

    @nn.compact
    def __call__(self, x):
        batch = x.shape[0]
        h = nn.gelu(nn.Dense(self.coarse * self.channels)(x)).reshape(batch, self.coarse, self.channels)
        h = jax.image.resize(h, (batch, self.outputs, self.channels), method="linear")
        position = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, self.outputs)[None, :, None], (batch, self.outputs, 1))
        h = nn.Conv(self.channels, (1,))(jnp.concatenate([h, position], axis=-1))
        for _ in range(self.blocks):
            z = nn.Conv(self.channels, (self.kernel,), padding="SAME")(nn.gelu(h))
            h = h + nn.Conv(self.channels, (self.kernel,), padding="SAME")(nn.gelu(z))
        return nn.Conv(1, (1,))(nn.gelu(h))[..., 0]
