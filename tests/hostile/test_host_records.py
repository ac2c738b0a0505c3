"""
However many hosts anyone makes pxe-pilot see, the host list comes in pages, the status
page shows a bounded number, and the pxe-pilot command still lists every host.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import ensureDeferred

from pxepilot.cli import CommandError, every_host
from pxepilot.hosts.model import EventKind
from pxepilot.http.operator import MOST_HOSTS_PAGE
from pxepilot.macs import MacAddress
from tests.conftest import result_of
from tests.test_http import Client

HOSTS = "http://pxe.test/hosts"


def seen(client: Client, count: int) -> list[str]:
    macs = [
        MacAddress.parse(f"b0:7b:25:{n >> 16:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}")
        for n in range(count)
    ]
    for mac in reversed(macs):
        client.pilot.ledger.note(mac, EventKind.SCRIPT, "menu")
    return [str(mac) for mac in macs]


def test_the_host_list_comes_in_pages(client: Client) -> None:
    """
    C{GET /hosts?limit=} gives that many hosts in MAC order and C{next}; following
    C{next} with C{?after=} lists every host once; C{states} always counts them all.
    """
    macs = seen(client, 7)
    listed: list[str] = []
    code, report = client.json("GET", f"{HOSTS}?limit=3")
    assert code == 200
    assert report["states"]["booting"] == 7
    listed += [host["mac"] for host in report["known_hosts"]]
    while "next" in report:
        code, report = client.json("GET", f"{HOSTS}?limit=3&after={report['next']}")
        assert code == 200
        assert report["states"]["booting"] == 7
        listed += [host["mac"] for host in report["known_hosts"]]
    assert listed == macs


def test_the_default_page_is_bounded(client: Client) -> None:
    macs = seen(client, 520)
    code, report = client.json("GET", HOSTS)
    assert code == 200
    assert len(report["known_hosts"]) == 500
    assert report["next"] == macs[499]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=-1", f"limit={MOST_HOSTS_PAGE + 1}", "limit=ten", "after=nope"]
)
def test_a_bad_page_is_a_clear_400(client: Client, query: str) -> None:
    code, report = client.json("GET", f"{HOSTS}?{query}")
    assert code == 400
    assert "limit" in report["error"] or "MAC" in report["error"]


def test_the_status_page_shows_the_most_recent_and_says_how_many_more(client: Client) -> None:
    macs = seen(client, 503)
    code, _, body = client.request("GET", "http://pxe.test/")
    page = body.decode()
    assert code == 200
    hosts = client.pilot.ledger.hosts.values()
    oldest = {str(host.mac) for host in sorted(hosts, key=lambda host: host.last_event.at)[:3]}
    assert [mac for mac in macs if mac not in page] == [mac for mac in macs if mac in oldest]
    assert "3 more hosts" in page
    assert "pxe-pilot hosts" in page


class Pages:
    """
    A server's C{GET /hosts} pages, as the CLI's client asks for them.
    """

    def __init__(self, pages: dict[str | None, dict[str, Any]]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    async def call(self, method: str, path: str) -> dict[str, Any]:
        self.asked.append(path)
        after = path.partition("after=")[2] or None
        return dict(self.pages[after.replace("%3A", ":") if after else None])


def test_the_command_follows_every_page() -> None:
    pages = Pages(
        {
            None: {"known_hosts": [{"mac": "a"}], "states": {"new": 3}, "next": "aa:01"},
            "aa:01": {"known_hosts": [{"mac": "b"}], "next": "aa:02"},
            "aa:02": {"known_hosts": [{"mac": "c"}]},
        }
    )
    report = result_of(ensureDeferred(every_host(pages)))  # type: ignore[arg-type]
    assert [host["mac"] for host in report["known_hosts"]] == ["a", "b", "c"]
    assert report["states"] == {"new": 3}
    assert "next" not in report
    assert pages.asked == ["hosts", "hosts?after=aa:01", "hosts?after=aa:02"]


def test_the_command_stops_on_pages_that_do_not_move_on() -> None:
    pages = Pages(
        {
            None: {"known_hosts": [], "next": "aa:02"},
            "aa:02": {"known_hosts": [], "next": "aa:01"},
        }
    )
    with pytest.raises(CommandError, match="do not move on"):
        result_of(ensureDeferred(every_host(pages)))  # type: ignore[arg-type]
