"""The hook implementations: what coarsekl finds through the "coarsekl" entry point."""

import coarsekl

from coarsekl_stripes.components import BlockEntropy, BlockPower, Stripes


@coarsekl.hookimpl
def coarsekl_partitions():
    return [
        coarsekl.Component(
            name="stripes",
            factory=Stripes,
            summary="H × W grid cut into `stripes` horizontal bands of equal height",
        )
    ]


@coarsekl.hookimpl
def coarsekl_kernels():
    return [
        coarsekl.Component(
            name="block-power",
            factory=BlockPower,
            summary="p' ∝ p^γ inside each block, block masses kept (block-preserving)",
        )
    ]


@coarsekl.hookimpl
def coarsekl_metrics():
    return [
        coarsekl.Component(
            name="block_entropy",
            factory=BlockEntropy,
            summary="Shannon entropy of the block masses, −Σ_j w_j log w_j",
        )
    ]
