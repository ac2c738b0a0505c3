"""
The boot storm benchmark's driver (C{bench/boot_storm.py}), run with two machines
against a real pxe-pilot and a small asset: it verifies what it downloads and counts
what goes wrong, so that it cannot report a storm that failed as one that passed. No
figure is checked here: timings belong to the benchmark's own runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.boot_storm import (
    ASSET,
    PHASES,
    Layout,
    PhaseFailed,
    Storm,
    Target,
    asset_urls,
    machine,
    main,
    menu_url,
    prepare,
    run_storm,
    start_pxe_pilot,
    targets,
    verify,
)
from bench.http_bench import free_port
from pxepilot.boot.ipxe import boot_script

IPXE = Path("/usr/lib/ipxe")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (scripts/test installs it)")
    if not (IPXE / "ipxe.efi").exists():
        pytest.fail("Debian's iPXE binaries are missing (scripts/test installs ipxe)")
    return prepare(tmp_path, 2, 1, IPXE)


def storm(layout: Layout) -> Storm:
    server, target = start_pxe_pilot(layout, "pxe-pilot", "warn")
    try:
        return run_storm(target, layout, 2, 0.0)
    finally:
        server.stop()


def test_a_storm_that_goes_well_has_every_phase_checked(layout: Layout) -> None:
    """
    Both machines go through every phase, and every download is checked: the TFTP file
    by SHA-256, the kernel and initrd by size, the answer by the machine's host name.
    """
    result = storm(layout)
    assert result.failures == {}
    assert {phase: len(times) for phase, times in result.latencies.items()} == dict.fromkeys(
        PHASES, 2
    )
    assert len(result.booted) == len(result.answered) == len(result.finished) == 2
    checked = sorted((kind, machine.index) for kind, machine, _, _ in result.checks)
    assert checked == [
        ("answer verify", 0),
        ("answer verify", 1),
        ("asset verify", 0),
        ("asset verify", 0),
        ("asset verify", 1),
        ("asset verify", 1),
        ("tftp verify", 0),
        ("tftp verify", 1),
    ]
    assert targets([(result, None)]) == {"2 machines: no failure": True}


def test_wrong_bytes_and_another_machines_answer_are_failures(layout: Layout) -> None:
    """
    A boot file whose bytes differ from Debian's, and an answer that is not the
    machine's own (its host file is missing, so it gets default.toml), are each counted
    with the machine and what was wrong; the storm goes on for the rest.
    """
    efi = layout.tftp_root / "ipxe.efi"
    data = bytearray(efi.read_bytes())
    data[-1] ^= 0xFF
    efi.write_bytes(bytes(data))
    (layout.answers / "hosts" / f"{machine(0).mac.replace(':', '-')}.toml").unlink()
    result = storm(layout)
    assert sorted(result.failures) == ["answer verify", "tftp verify"]
    ((tftp,), (answer,)) = result.failures["tftp verify"], result.failures["answer verify"]
    assert tftp.startswith("machine 1: ipxe.efi: SHA-256 ")
    assert answer.startswith("machine 0: served the answer for {'source': 'from-dhcp'")
    assert answer.endswith("not 'node-000.storm.example'")
    assert len(result.finished) == 2
    assert targets([(result, None)]) == {"2 machines: no failure": False}


def test_a_machine_that_cannot_install_fails_at_its_menu(layout: Layout) -> None:
    """
    Without the asset's initrd the version is not offered: the menu boots the disk, and
    each machine is counted as failed there, with the menu's reason, going no further.
    """
    (layout.assets / ASSET / "initrd").unlink()
    result = storm(layout)
    assert list(result.failures) == ["menu.ipxe"]
    assert len(result.failures["menu.ipxe"]) == 2
    assert "the default is local, not an installation" in result.failures["menu.ipxe"][0]
    assert result.booted == result.answered == []
    assert result.latencies["asset"] == result.latencies["answer"] == []


def test_a_short_asset_is_a_failure(tmp_path: Path) -> None:
    """
    An asset download of another size than the file's is counted.
    """
    layout = Layout(tmp_path, tmp_path, tmp_path, tmp_path, {}, {"/assets/a": 10})
    result = Storm("pxe-pilot", 1)
    result.checks.append(("asset verify", machine(0), "http://127.0.0.1:1/assets/a", 9))
    result.checks.append(("asset verify", machine(0), "http://127.0.0.1:1/assets/a", 10))
    verify(result, layout)
    assert result.failures == {"asset verify": ["machine 0: /assets/a: 9 bytes, not 10"]}


def test_a_stack_that_does_not_answer_stops_the_run(layout: Layout) -> None:
    """
    A stack that serves nothing fails before the clock starts, with curl's error.
    """
    port = free_port()
    nothing = Target("nothing", port, f"http://127.0.0.1:{port}/", (), True)
    with pytest.raises(subprocess.CalledProcessError):
        run_storm(nothing, layout, 2, 0)


def test_the_menu_url_is_expanded_as_ipxe_would() -> None:
    """
    The boot script's chain line, with the settings of a UEFI machine filled in; a
    setting the storm cannot fill in is a failure of that phase, not a guess.
    """
    script = boot_script("http://127.0.0.1:8080/menu.ipxe")
    url = menu_url(script, machine(1))
    assert url.startswith(
        "http://127.0.0.1:8080/menu.ipxe?mac=02:5b:00:01:00:00&platform=efi&buildarch=x86_64"
        "&memsize=&memdevs=0040-00000000.0040-00000000.&uuid=5b5b0000-0000-4000-8000-"
        "000000000001&serial=STORM00001&product=PowerEdge%20R650"
    )
    with pytest.raises(PhaseFailed, match="does not know: \\['hostname'\\]"):
        menu_url(script.replace("${platform}", "${hostname}"), machine(1))
    with pytest.raises(PhaseFailed, match="no choice"):
        asset_urls("#!ipxe\nexit\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--machines", "20,x"], "'x' is not a number of machines (1 to 1000)"),
        (["--machines", "0"], "'0' is not a number of machines"),
        (["--asset-mib", "0"], "'0' is not a size in MiB (1 to 4096)"),
        (["--pause", "-1"], "'-1' is not a number of seconds"),
    ],
)
def test_bad_options_are_refused_with_why(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--no-netns", "--no-peer"])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
