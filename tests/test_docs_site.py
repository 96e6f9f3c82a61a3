"""The documentation site builds with warnings as errors, and its references are complete:
every hook appears in the hook reference, every built-in component in the component
reference, and the tutorial shows the tutorial package's real files."""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import coarsekl
from coarsekl.registry import KINDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOKSPECS = ROOT / "coarsekl" / "hookspecs.py"
sys.path.insert(0, str(DOCS / "_ext"))  # the site's own Sphinx extensions
DOCS_TOOLS = ("sphinx", "myst_parser", "pydata_sphinx_theme", "numpydoc")

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(tool) is None for tool in DOCS_TOOLS),
    reason="the documentation tools are not installed (pip install -e '.[docs]')",
)


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs-html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", DOCS, out],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stderr[-5000:]}"
    return out


def page_text(site: Path, page: str) -> str:
    """The visible text of a built page, tags removed and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", (site / page).read_text(encoding="utf-8")))


def test_every_page_of_the_docs_folder_is_built(built_site):
    sources = {path.stem for path in DOCS.glob("*.md")} | {p.stem for p in DOCS.glob("*.rst")}
    built = {path.stem for path in built_site.glob("*.html")}
    assert sources <= built, f"pages not in the site: {sorted(sources - built)}"


def test_every_hook_is_in_the_hook_reference(built_site):
    hooks = re.findall(r"^def (coarsekl_\w+)\(", HOOKSPECS.read_text(encoding="utf-8"), re.M)
    assert len(hooks) >= 8
    text = page_text(built_site, "plugins.html")
    missing = [hook for hook in hooks if f"{hook}() -> Iterable[" not in text]
    assert not missing, f"hooks missing from the built hook reference: {missing}"


def test_every_built_in_component_is_in_the_component_reference(built_site):
    registry = coarsekl.get_registry(coarsekl.get_plugin_manager(autoload=False))
    page = (built_site / "config-reference.html").read_text(encoding="utf-8")
    text = page_text(built_site, "config-reference.html")
    for kind in KINDS:
        names = registry.names(kind)
        assert names, kind
        for name in names:
            assert f'id="config-{kind}-{name.lower().replace("_", "-")}"' in page, (kind, name)
    for name in registry.names("experiment"):
        assert name in text
    # generated from the attrs fields: a parameter, its type and default
    assert "floor" in text and "1e-12" in text


def test_component_reference_shows_units_from_docstrings(built_site):
    text = page_text(built_site, "config-reference.html")
    geometric_mean = text[text.index("geometric-mean#") :]
    assert "pixel" in geometric_mean[: geometric_mean.index("#", len("geometric-mean#"))]


def test_the_tutorial_includes_the_tutorial_package_files(built_site):
    text = page_text(built_site, "tutorial.html")
    assert 'stripes = "coarsekl_stripes.plugin"' in text
    assert "class BlockPower:" in text
    assert "def test_the_installed_plugin_runs_the_tutorial_experiment" in text


def test_the_gallery_shows_figures_computed_while_the_site_builds(built_site):
    from executed_gallery import GENERATED, gallery_experiments

    registry = coarsekl.get_registry(coarsekl.get_plugin_manager(autoload=False))
    names = gallery_experiments(registry)
    assert {"paper-restore", "forward-randomization", "round-trip"} <= set(names)
    gallery = (built_site / "gallery.html").read_text(encoding="utf-8")
    for name in names:
        assert (GENERATED / f"{name}_snapshots.png").is_file()
        assert (built_site / "_images" / f"{name}_snapshots.png").is_file()
        assert f"{name}_snapshots.png" in gallery
