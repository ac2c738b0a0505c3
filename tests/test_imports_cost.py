"""
What importing a piece of pxe-pilot costs: the protocol codecs and the builder load none
of the server (Klein, the metrics, the state database), and the package's public names
are loaded on first use.

Each test imports in a fresh interpreter: in this one, other tests have long since
imported the server, which would hide any import that pulls it in.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

# What only the running server needs: its web framework, its metrics, its state
# database, and the modules that bring them in.
SERVER_MODULES = (
    "klein",
    "prometheus_client",
    "sqlite3",
    "pxepilot.application",
    "pxepilot.http",
    "pxepilot.hosts",
)


def run_python(code: str) -> str:
    """
    Run C{code} in a new interpreter in the repository's root; its standard output.
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded_after(statement: str) -> list[str]:
    """
    Which of L{SERVER_MODULES} are loaded after C{statement}, in a new interpreter.
    """
    output = run_python(
        f"""
        import sys
        {statement}
        print("\\n".join(name for name in {SERVER_MODULES!r} if name in sys.modules))
        """
    )
    return output.split()


@pytest.mark.parametrize(
    "statement",
    ["import pxepilot.tftp.packets", "import pxepilot.dhcp.packet", "import builder.cli"],
)
def test_loads_none_of_the_server(statement: str) -> None:
    """
    A packet codec, or the builder reading pxe-pilot's version, loads nothing of the
    server: a tool, a test or a benchmark that needs one module pays for that module.
    """
    assert loaded_after(statement) == []


def test_public_names_loaded_on_first_use() -> None:
    """
    C{import pxepilot} alone loads none of the server; each public name still imports
    from the package, is the object its module defines, and C{__all__} is as it was.
    """
    output = run_python(
        f"""
        import sys
        import pxepilot
        print(sorted(name for name in {SERVER_MODULES!r} if name in sys.modules))
        from pxepilot import PxePilot, Config, make_service, load_config, ConfigError
        from pxepilot import __version__
        import pxepilot.application, pxepilot.config, pxepilot._version
        assert PxePilot is pxepilot.application.PxePilot
        assert make_service is pxepilot.application.make_service
        assert Config is pxepilot.config.Config
        assert ConfigError is pxepilot.config.ConfigError
        assert load_config is pxepilot.config.load_config
        assert __version__ == pxepilot._version.__version__
        assert set(pxepilot.__all__) <= set(dir(pxepilot))
        try:
            pxepilot.no_such_name
        except AttributeError:
            pass
        else:
            raise AssertionError("pxepilot.no_such_name did not raise AttributeError")
        print(pxepilot.__all__)
        """
    )
    loaded, public = output.splitlines()
    assert loaded == "[]"
    assert public == str(
        ["Config", "ConfigError", "PxePilot", "__version__", "load_config", "make_service"]
    )
