"""The README's promise: on a fresh machine its two commands do all the set-up.

Runs both commands verbatim in a copy of the source tree, each in a fresh virtual
environment. Slow (minutes: two installs and the suite once more), so marked ``slow``.

The copy carries the numba caches that this run has compiled so far (``__pycache__``'s
``.nbi`` and ``.nbc``: ignored files, which a fresh clone compiles for itself, as this
outer run did): numba checks each against its source file and compiles again where it
is stale. Without them the inner suite compiles every kernel again: about two minutes
more (334 against 205 s on a Zen 3) of a CI run that should stay under fifteen.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INNER = "COARSEKL_INSIDE_FRESH_INSTALL_TEST"
NUMBA_PACKAGES = ("coarsekl", "plugins", "examples")  # where compiled kernels live

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(os.environ.get(INNER)), reason="already inside the fresh install"),
]


def readme_commands() -> dict[str, str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("python3 -m venv")]
    run = [c for c in commands if "coarsekl run paper-restore" in c]
    test = [c for c in commands if "pytest" in c]
    assert len(run) == 1 and len(test) == 1, commands
    return {"run": run[0], "test": test[0]}


@pytest.fixture(scope="module")
def fresh_tree(tmp_path_factory):
    """The files a fresh clone would have (tracked and new, not ignored), and the numba
    caches compiled so far."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    tree = tmp_path_factory.mktemp("fresh") / "coarsekl"
    caches = [
        path.relative_to(ROOT)
        for package in NUMBA_PACKAGES
        for path in (ROOT / package).glob("**/__pycache__/*.nb[ic]")
    ]
    for name in [*filter(None, listed), *caches]:
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)  # (with its time: numba's caches check it)
    return tree


def _bash(command: str, cwd: Path, timeout: int, extra_env=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(extra_env or {})
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_readme_run_command_writes_the_trajectory_and_figures(fresh_tree):
    result = _bash(readme_commands()["run"], fresh_tree, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = fresh_tree / "results" / "paper-restore"
    assert sorted(p.name for p in out.iterdir()) == [
        "paper-restore.nc",
        "paper-restore_block_masses.png",
        "paper-restore_metrics.png",
        "paper-restore_snapshots.png",
    ]


def test_readme_test_command_passes_the_suite(fresh_tree):
    result = _bash(readme_commands()["test"], fresh_tree, timeout=1800, extra_env={INNER: "1"})
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)


def test_ci_runs_exactly_the_readme_test_command():
    assert readme_commands()["test"] in (ROOT / ".ci" / "run").read_text().splitlines()
