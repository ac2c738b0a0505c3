"""
The README's first section and the scripts it names agree: the Debian packages each
script needs are the ones the README lists, the command it prints is the README's, CI
leaves them to the script so that a clean machine proves it, and the scripts install
them as root and stop with that command otherwise.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def first_section() -> str:
    """
    The README up to its first rule: what a new user reads before anything else.
    """
    return (ROOT / "README.md").read_text().split("\n---\n")[0]


def script_packages(name: str) -> list[str]:
    """
    The packages a script passes to C{need_packages}.
    """
    [line] = [
        line.split()[1:]
        for line in (SCRIPTS / name).read_text().splitlines()
        if line.startswith("need_packages ")
    ]
    return line


def readme_packages(name: str) -> list[str]:
    """
    The packages the README's first section says C{scripts/NAME} needs: the backquoted
    list after its name in the sentence naming each script's packages (for the second
    script, those it needs beyond the first's: "needs those and ...").
    """
    text = " ".join(first_section().split())
    found = re.search(rf"`scripts/{name}` needs (?:those and )?`([a-z0-9. +-]+)`", text)
    assert found, f"the README does not say which packages scripts/{name} needs"
    return found.group(1).split()


def readme_command() -> list[str]:
    """
    The apt-get command the README's first section gives, as words.
    """
    commands = [
        line.split()
        for line in first_section().splitlines()
        if line.startswith("sudo apt-get install ")
    ]
    assert len(commands) == 1, commands
    return commands[0]


def ci_packages() -> list[str]:
    """
    The packages C{.ci/run} installs itself, continuation lines joined.
    """
    text = re.sub(r"\\\n\s*", " ", (ROOT / ".ci" / "run").read_text())
    [line] = [line for line in text.splitlines() if line.startswith("apt-get install ")]
    return [word for word in line.split()[2:] if not word.startswith("-")]


def test_readme_names_the_packages_each_script_installs() -> None:
    """
    What the README says each script needs is what the script installs, and the one
    command it gives installs them all.
    """
    run, test = script_packages("run-example"), script_packages("test")
    assert readme_packages("run-example") == run
    needs = readme_packages("test")
    assert needs == [p for p in test if p not in run], "the README lists test's own ones"
    assert set(run) <= set(test)
    assert readme_command() == [
        "sudo",
        "apt-get",
        "install",
        "--no-install-recommends",
        *test,
    ]


def test_ci_leaves_the_scripts_packages_to_the_script() -> None:
    """
    CI starts from a clean machine and installs only what the end-to-end tests need on
    top, then runs scripts/test: so a green run proves that scripts/test installs what
    the README says it does.
    """
    assert set(ci_packages()).isdisjoint(script_packages("test"))
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("exec scripts/test")


def test_readme_says_where_the_commands_are() -> None:
    """
    The first section says where the commands are installed and how to put them on
    the PATH.
    """
    text = first_section()
    assert "`.venv-run/bin/`" in text
    assert 'export PATH="$PWD/.venv-run/bin:$PATH"' in text


# --- need_packages, with apt-get, dpkg-query and id replaced ---------------------------


def stubs(tmp_path: Path, uid: int, installed: set[str], apt_fails_first: bool) -> Path:
    """
    A directory of stand-ins for dpkg-query, apt-get and id; each call to apt-get is
    recorded in C{apt.log}.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    programs = {
        "id": f'[ "$1" = -u ] && echo {uid}\n',
        "dpkg-query": (
            'for package; do :; done\ncase " '
            + " ".join(sorted(installed))
            + ' " in *" $package "*) printf "install ok installed" ;; *) exit 1 ;; esac\n'
        ),
        "apt-get": (
            f'echo "$*" >>"{tmp_path}/apt.log"\n'
            + (
                f'[ "$1" = install ] && [ ! -e "{tmp_path}/updated" ] && exit 100\n'
                f'[ "$1" = update ] && touch "{tmp_path}/updated"\n'
                if apt_fails_first
                else ""
            )
            + "exit 0\n"
        ),
    }
    for name, body in programs.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def need(
    tmp_path: Path,
    packages: list[str],
    uid: int,
    installed: Collection[str] = (),
    apt_fails_first: bool = False,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = stubs(tmp_path, uid, set(installed), apt_fails_first)
    environ = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["sh", "-c", '. "$0"; need_packages "$@"', str(SCRIPTS / "lib.sh"), *packages],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    log = tmp_path / "apt.log"
    return done, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("script", ["test", "run-example"])
def test_as_another_user_the_command_is_printed(tmp_path: Path, script: str) -> None:
    """
    Run by anyone but root with packages missing, a script installs nothing, prints the
    command that installs them (the README's, for what is missing) and stops.
    """
    packages = script_packages(script)
    done, apt = need(tmp_path, packages, uid=1000)
    assert done.returncode == 1
    assert apt == []
    assert done.stderr.splitlines()[-1].split() == readme_command()[: 4 + len(packages)]
    assert done.stderr.splitlines()[-1].split()[4:] == packages


def test_as_root_the_missing_packages_are_installed(tmp_path: Path) -> None:
    """
    Run as root, only the missing packages are installed, without a question.
    """
    packages = script_packages("test")
    done, apt = need(tmp_path, packages, uid=0, installed={"python3", "curl"})
    assert done.returncode == 0, done.stderr
    missing = [p for p in packages if p not in ("python3", "curl")]
    assert apt == [f"install -y --no-install-recommends {' '.join(missing)}"]


def test_as_root_on_a_machine_without_package_lists(tmp_path: Path) -> None:
    """
    A fresh machine or container may have no package lists: they are fetched once the
    first attempt fails, then the packages installed.
    """
    done, apt = need(tmp_path, ["xorriso"], uid=0, apt_fails_first=True)
    assert done.returncode == 0, done.stderr
    assert apt == [
        "install -y --no-install-recommends xorriso",
        "update",
        "install -y --no-install-recommends xorriso",
    ]


def test_nothing_missing_nothing_done(tmp_path: Path) -> None:
    """
    With everything installed, nobody is asked for anything, root or not.
    """
    packages = script_packages("test")
    for uid in (0, 1000):
        done, apt = need(tmp_path / str(uid), packages, uid=uid, installed=set(packages))
        assert (done.returncode, done.stderr, apt) == (0, "", [])
