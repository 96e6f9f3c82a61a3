"""The tutorial's outside plugin package (examples/plugin-tutorial) works the way a real
author's would: installed with pip, found through its entry point, listed, run.

The README's test command installs it (``-e examples/plugin-tutorial``).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import coarsekl

TUTORIAL = Path(__file__).resolve().parents[1] / "examples" / "plugin-tutorial"
COMPONENTS = {"partition": "stripes", "kernel": "block-power", "metric": "block_entropy"}


@pytest.fixture(scope="module", autouse=True)
def installed_tutorial_plugin():
    try:
        importlib.metadata.distribution("coarsekl-stripes")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "the tutorial plugin is not installed; install it with "
            "'pip install -e examples/plugin-tutorial' (the README's test command does)"
        )


def test_the_entry_point_is_declared_in_the_coarsekl_group():
    entry_points = importlib.metadata.distribution("coarsekl-stripes").entry_points
    assert [(e.group, e.name, e.value) for e in entry_points] == [
        ("coarsekl", "stripes", "coarsekl_stripes.plugin")
    ]


@pytest.mark.parametrize("kind", sorted(COMPONENTS))
def test_autoload_finds_each_component_with_its_distribution(kind):
    registered = coarsekl.get_registry(coarsekl.get_plugin_manager(autoload=True)).lookup(
        kind, COMPONENTS[kind]
    )
    assert registered.provider.plugin == "stripes"
    assert registered.provider.distribution == "coarsekl-stripes"


def test_without_autoload_the_outside_plugin_is_absent():
    registry = coarsekl.get_registry(coarsekl.get_plugin_manager(autoload=False))
    assert "block-power" not in registry.names("kernel")


def test_coarsekl_plugins_lists_the_outside_components():
    result = subprocess.run(
        [sys.executable, "-m", "coarsekl", "plugins"], capture_output=True, text=True, check=True
    )
    listed = [line.split() for line in result.stdout.splitlines()]
    for kind, name in COMPONENTS.items():
        assert any(row[:3] == [kind, name, "coarsekl-stripes"] for row in listed), result.stdout


def test_coarsekl_run_uses_the_outside_components(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coarsekl",
            "run",
            str(TUTORIAL / "stripes.toml"),
            "--out",
            str(tmp_path),
            "--quiet",
            "--no-figures",
            "--set",
            "steps=3",
            "--set",
            "record.snapshots=[0,3]",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    ds = coarsekl.open_trajectory(tmp_path / "stripes.nc")
    for kind, name in COMPONENTS.items():
        assert f"{kind} {name}" in ds.attrs["plugins"]
    assert ds.block_entropy.sizes == {"scheme": 2, "member": 2, "step": 4}
    assert list(ds.stripe_top.values) == [0, 16, 32, 48]
