"""coarsekl_gmm: real diffusion samplers on Gaussian mixtures, with exact scores.

The data is a Gaussian mixture in R^d, so every noised marginal, score, noise predictor
and class posterior is exact (THEORY §7). The state is a weighted particle ensemble
(:class:`coarsekl.Ensemble`); the kernels are DDPM, DDIM and DPM-Solver++(2M) with optional
model error and classifier guidance; particles are partitioned by class or by spatial
cells, and the sample-based V_δ projection reweights or resamples them.
"""
