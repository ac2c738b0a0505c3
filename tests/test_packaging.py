"""
The wheel, installed (not editable) into a fresh virtualenv, provides the twistd plugin
and the builder command; the plugin cache is never part of the project.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """
    C{twistd --help} lists C{pxe-pilot} and C{pxe-pilot-builder} is on the path.
    """
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", dist, ROOT)
    [wheel] = dist.glob("pxe_pilot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/pxe_pilot_plugin.py" in names
    assert not [n for n in names if n.startswith("twisted/") and n.count("/") == 1]
    assert not [n for n in names if "dropin.cache" in n or n.startswith("tests/")]
    assert "pxepilot/py.typed" in names
    for package in ("pxepilot", "builder"):
        for init in (ROOT / package).rglob("__init__.py"):
            assert str(init.relative_to(ROOT)) in names, f"{init.parent.name} is not packaged"

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(
        venv / "bin" / "pip", "install", "--quiet", "--constraint", ROOT / "constraints.txt", wheel
    )
    # Run from elsewhere so that nothing of the source tree is importable.
    help_text = run(venv / "bin" / "twistd", "--help", cwd=tmp_path)
    assert "pxe-pilot" in help_text
    assert (venv / "bin" / "pxe-pilot-builder").exists()
    plugin_help = run(venv / "bin" / "twistd", "pxe-pilot", "--help", cwd=tmp_path)
    assert "PXE_PILOT_ANSWERS_DIR" in plugin_help


def test_plugin_cache_is_never_committed() -> None:
    """
    twistd's C{dropin.cache} is ignored by git and not tracked.
    """
    assert "dropin.cache" in (ROOT / ".gitignore").read_text().splitlines()
    tracked = run("git", "ls-files", cwd=ROOT).splitlines()
    assert not [name for name in tracked if name.endswith("dropin.cache")]
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()
