"""coarsekl_chains: finite-state Markov chains, the setting of the paper's theorems.

A state is a distribution p over n states (shape ``(..., n)``); a label vector cuts the
states into K blocks, each with a reference within-block distribution π_j (uniform by
default). Kernels are transition matrices acting as ``p' = p @ P``: a fixed matrix, a
time-dependent sequence, and random block-diagonal generators (row-stochastic, doubly
stochastic, or keeping π_j invariant), optionally mixed with an off-block kernel at
leakage ε. The named experiment ``theorems`` checks Theorems 1 and 2 numerically.
"""
