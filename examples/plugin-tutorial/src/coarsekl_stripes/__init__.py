"""coarsekl-stripes: an outside coarsekl plugin (the worked example of the tutorial).

It adds three components:

* the partition ``stripes``: the image cut into horizontal bands of equal height;
* the kernel ``block-power``: p'(x) ∝ p(x)^γ inside each block, keeping every block mass;
* the metric ``block_entropy``: the Shannon entropy of the block masses.
"""

from coarsekl_stripes.components import BlockEntropy, BlockPower, Stripes

__all__ = ["BlockEntropy", "BlockPower", "Stripes"]
