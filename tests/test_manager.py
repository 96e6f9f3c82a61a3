from __future__ import annotations

import importlib
import sys
import textwrap
import warnings

import pytest

import coarsekl
from coarsekl.errors import PluginError
from coarsekl.manager import BUILTIN_PLUGINS, get_plugin_manager, get_registry

KERNEL_MODULE = '''
from typing import ClassVar

import attrs

import coarsekl


@attrs.frozen(kw_only=True)
class Halfway:
    """Moves every state halfway to the data state."""

    block_preserving: ClassVar[bool] = False
    weight: float = 0.5

    def step(self, state, problem, step, rng):
        return (1 - self.weight) * state + self.weight * problem.data_state


@coarsekl.hookimpl
def coarsekl_kernels():
    return [coarsekl.Component(name="{name}", factory=Halfway, summary="halfway to the data")]
'''


def install_throwaway_package(root, package, body, version="1.2.3", ep_name=None):
    """Lay out an installed distribution (a .dist-info with an entry point) under ``root``."""
    (root / package).mkdir()
    (root / package / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{package}-{version}.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
    )
    info.joinpath("entry_points.txt").write_text(f"[coarsekl]\n{ep_name or package} = {package}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("throwaway")]:
        del sys.modules[name]


def test_entry_point_plugin_is_found_by_name_and_runs(site, small_config):
    install_throwaway_package(site, "throwaway_kernels", KERNEL_MODULE.format(name="halfway"))
    registry = get_registry()
    entry = registry.lookup("kernel", "halfway")
    assert (entry.provider.distribution, entry.provider.version) == ("throwaway_kernels", "1.2.3")
    ds = coarsekl.run(small_config(kernel={"kind": "halfway", "weight": 0.5}), registry=registry)
    assert float(ds.mse.sel(scheme="base").isel(member=0, step=-1)) < float(
        ds.mse.sel(scheme="base").isel(member=0, step=0)
    )
    assert "throwaway_kernels 1.2.3" in ds.attrs["plugins"]


def test_autoload_can_be_switched_off(site, monkeypatch):
    install_throwaway_package(site, "throwaway_off", KERNEL_MODULE.format(name="halfway"))
    monkeypatch.setenv("COARSEKL_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "halfway" not in get_registry().names("kernel")


def test_duplicate_names_name_both_providers(site):
    install_throwaway_package(site, "throwaway_dupe", KERNEL_MODULE.format(name="block-blur"))
    with pytest.raises(PluginError) as error:
        get_registry()
    message = str(error.value)
    assert "two plugins provide a kernel named 'block-blur'" in message
    assert "coarsekl_images.plugin" in message
    assert "throwaway_dupe 1.2.3" in message


def test_a_plugin_failing_to_load_is_reported_not_fatal(site, capsys):
    install_throwaway_package(site, "throwaway_broken", "raise ImportError('no numba here')\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = get_registry()
    assert any("throwaway_broken" in str(w.message) for w in caught)
    assert "geometric-mean" in registry.names("kernel")  # the rest still works
    with pytest.raises(PluginError, match="throwaway_broken 1.2.3 failed to load"):
        registry.lookup("kernel", "my-missing-kernel")


def test_misspelled_hook_implementation_is_an_error():
    class Plugin:
        @coarsekl.hookimpl
        def coarsekl_kernal(self):
            return []

    pm = get_plugin_manager(autoload=False)
    pm.register(Plugin())
    with pytest.raises(Exception, match="unknown hook 'coarsekl_kernal'"):
        pm.check_pending()


def test_builtin_plugins_use_the_public_hooks():
    pm = get_plugin_manager(autoload=False)
    for name in BUILTIN_PLUGINS:
        plugin = pm.get_plugin(name)
        assert plugin is not None
        hooks = [h.name for h in pm.get_hookcallers(plugin)]
        assert hooks and all(h.startswith("coarsekl_") for h in hooks)


def test_unknown_name_suggests_close_matches():
    registry = get_registry(get_plugin_manager(autoload=False))
    with pytest.raises(
        PluginError, match=r"no kernel named 'unsharp'; did you mean 'unsharp-mask'"
    ):
        registry.lookup("kernel", "unsharp")


def test_core_never_imports_plugins():
    """coarsekl/ knows no plugin by import; it names the built-ins only as module strings."""
    from pathlib import Path

    core = Path(coarsekl.__file__).parent
    for source in core.glob("*.py"):
        text = source.read_text()
        for plugin in ("coarsekl_blocks", "coarsekl_images", "coarsekl_paper"):
            assert f"import {plugin}" not in text and f"from {plugin}" not in text, source


def test_an_outside_plugin_with_a_misspelled_hook_is_reported_not_fatal(site):
    body = "import coarsekl\n\n@coarsekl.hookimpl\ndef coarsekl_kernal():\n    return []\n"
    install_throwaway_package(site, "throwaway_typo", body)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = get_registry()
    assert any("coarsekl_kernal" in str(w.message) for w in caught)
    assert "throwaway_typo" in str(registry.failures[0].provider)
    assert "geometric-mean" in registry.names("kernel")
