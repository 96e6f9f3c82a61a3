"""coarsekl_blocks: partitions, coarse quantities, the V_δ projector and the standard metrics.

The method of the paper itself: cut the sites into blocks, measure block masses, project
them onto the admissible set A_δ in closed form, and record V, V_δ, E_block and friends.
"""
