"""The documentation agrees with the code: hooks documented, README example runs, commands."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
HOOKSPECS = ROOT / "coarsekl" / "hookspecs.py"
CI_RUN = ROOT / ".ci" / "run"

INSTALL_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install . && "
    ".venv/bin/coarsekl run paper-restore --out results/paper-restore"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' -e examples/plugin-tutorial && "
    ".venv/bin/python -m pytest"
)


def hook_signatures() -> dict[str, str]:
    """Every ``@hookspec`` function of coarsekl/hookspecs.py -> ``name(args) -> returns``."""
    tree = ast.parse(HOOKSPECS.read_text(encoding="utf-8"))
    signatures = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            ast.unparse(decorator).startswith("hookspec") for decorator in node.decorator_list
        ):
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            signatures[node.name] = f"{node.name}({ast.unparse(node.args)}){returns}"
    return signatures


def headings(markdown: str) -> list[str]:
    return [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]


def code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", markdown, flags=re.M | re.S)


def section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def test_hookspecs_are_found():
    assert len(hook_signatures()) >= 8


@pytest.mark.parametrize("name", sorted(hook_signatures()))
def test_every_hook_has_a_heading_with_its_exact_signature(name):
    signature = hook_signatures()[name]
    titles = headings(PLUGINS_DOC.read_text(encoding="utf-8"))
    matching = [t for t in titles if re.search(rf"\b{re.escape(name)}\b", t)]
    assert matching, f"docs/plugins.md has no heading for the hook {name}"
    assert any(signature in t for t in matching), (
        f"the heading for {name} in docs/plugins.md must show its signature `{signature}`; "
        f"found {matching}"
    )


def test_documented_hooks_exist():
    known = set(hook_signatures())
    documented = {
        name
        for title in headings(PLUGINS_DOC.read_text(encoding="utf-8"))
        for name in re.findall(r"`(coarsekl_\w+)\(", title)
    }
    assert documented <= known, f"docs/plugins.md documents unknown hooks {documented - known}"


def test_readme_plugin_example_runs(tmp_path):
    blocks = code_blocks(section(README.read_text(encoding="utf-8"), "Writing a plugin"), "python")
    assert len(blocks) == 1, "the 'Writing a plugin' section must hold exactly one python block"
    script = tmp_path / "mykernels.py"
    script.write_text(blocks[0], encoding="utf-8")
    result = subprocess.run(
        [sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    import coarsekl

    ds = coarsekl.open_trajectory(tmp_path / "noisy-mix.nc")
    assert ds.sizes["step"] == 6
    assert list(ds.scheme.values) == ["base", "proj"]
    assert "kernel noisy-mix" in ds.attrs["plugins"]
    assert 'kind = "noisy-mix"' in ds.attrs["config"]


def test_readme_setup_commands_are_verbatim():
    blocks = [block.strip() for block in code_blocks(README.read_text(encoding="utf-8"), "bash")]
    assert INSTALL_COMMAND in blocks
    assert TEST_COMMAND in blocks
    assert blocks.index(INSTALL_COMMAND) < blocks.index(TEST_COMMAND)


def test_readme_test_command_is_the_ci_command():
    if not CI_RUN.is_file():
        pytest.skip(".ci/run does not exist yet")
    lines = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert TEST_COMMAND in lines, f".ci/run does not run the README's test command {TEST_COMMAND!r}"
