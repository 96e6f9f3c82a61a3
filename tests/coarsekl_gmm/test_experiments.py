"""The scripted experiments gmm-samplers and gmm-guidance at tiny sizes: what they write."""

from __future__ import annotations

import xarray as xr

from coarsekl_gmm import experiments

SAMPLERS = experiments.SamplerSettings(particles=300, steps=(4, 8), reference_steps=16)
GUIDANCE = experiments.GuidanceSettings(particles=300, steps=4, strengths=(0.0, 0.5))


def test_the_sampler_study_writes_its_trajectory_and_figures(tmp_path):
    written = experiments.run_samplers(tmp_path, settings=SAMPLERS)
    assert [path.name for path in written] == [
        "gmm-samplers.nc",
        "gmm-samplers_distances.png",
        "gmm-samplers_samples.png",
    ]
    with xr.open_dataset(written[0]) as ds:
        # Fewer particles than the figures show at most: all of them are kept.
        assert ds.final_position.shape[-2:] == (SAMPLERS.particles, 2)


def test_the_guidance_study_without_figures_writes_only_its_trajectory(tmp_path):
    written = experiments.run_guidance(tmp_path, figures=False, settings=GUIDANCE)
    assert [path.name for path in written] == ["gmm-guidance.nc"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gmm-guidance.nc"]
