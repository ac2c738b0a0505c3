"""
A transfer's socket on 127.0.0.1: connected to its client once served, with strangers'
datagrams still reaching the transfer through a second socket on the same port.
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Iterator

import pytest
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import DatagramProtocol

from pxepilot.tftp.sockets import TransferSocket

Address = tuple[str, int]


class Readers:
    """
    Where sockets register for reading, as they would with the reactor.
    """

    def __init__(self) -> None:
        self.readers: list[IReadDescriptor] = []

    def addReader(self, reader: IReadDescriptor) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: IReadDescriptor) -> None:
        self.readers.remove(reader)

    def deliver(self) -> None:
        """
        Let every reader with a datagram waiting read it.
        """
        for reader in list(self.readers):
            while select.select([reader.fileno()], [], [], 0.2)[0]:
                reader.doRead()


class Received(DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Address]] = []

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        self.datagrams.append((datagram, addr))


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


def open_socket(readers: Readers, protocol: Received) -> TransferSocket:
    port = TransferSocket(readers, protocol, "127.0.0.1")  # type: ignore[arg-type]
    port.startListening()
    return port


def test_a_served_socket_sends_to_its_client_and_hears_strangers(client: socket.socket) -> None:
    readers = Readers()
    protocol = Received()
    port = open_socket(readers, protocol)
    address = port.socket.getsockname()
    peer = client.getsockname()
    send = port.serve(peer)
    assert port.socket.getpeername() == peer
    assert len(readers.readers) == 2

    send(b"block 1")
    assert client.recvfrom(100) == (b"block 1", address)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        client.sendto(b"ack 1", address)
        stranger.sendto(b"hello", address)
        readers.deliver()
        assert sorted(protocol.datagrams) == sorted(
            [(b"ack 1", peer), (b"hello", stranger.getsockname())]
        )
        # An answer to a stranger leaves from the transfer's port.
        port.write(b"error 5", stranger.getsockname())
        stranger.settimeout(5)
        assert stranger.recvfrom(100) == (b"error 5", address)
    port.stopListening()


def test_stopping_a_served_socket_closes_both_sockets(client: socket.socket) -> None:
    readers = Readers()
    port = open_socket(readers, Received())
    address = port.socket.getsockname()
    port.serve(client.getsockname())
    port.stopListening()
    assert readers.readers == []
    # Nothing holds the port any more: a socket without SO_REUSEADDR can have it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(address)


def test_a_new_transfer_is_never_given_a_served_port(client: socket.socket) -> None:
    readers = Readers()
    port = open_socket(readers, Received())
    served = port.socket.getsockname()[1]
    port.serve(client.getsockname())
    others = [open_socket(Readers(), Received()) for _ in range(300)]
    try:
        assert served not in {other.socket.getsockname()[1] for other in others}
    finally:
        for other in others:
            other.stopListening()
        port.stopListening()


def test_a_peer_it_cannot_connect_to_leaves_the_socket_unconnected(
    client: socket.socket,
) -> None:
    readers = Readers()
    protocol = Received()
    port = open_socket(readers, protocol)
    # An IPv6 peer for an IPv4 socket: connect() refuses it.
    send = port.serve(("::1", 69))
    with pytest.raises(OSError, match="not connected"):
        port.socket.getpeername()
    assert readers.readers == [port]
    with pytest.raises(socket.gaierror):
        send(b"block 1")
    # Unconnected, it still hears everyone, each with its own address.
    client.sendto(b"ack 1", port.socket.getsockname())
    readers.deliver()
    assert protocol.datagrams == [(b"ack 1", client.getsockname())]
    port.stopListening()


def test_out_of_descriptors_the_socket_stays_unconnected(
    client: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers = Readers()
    protocol = Received()
    port = open_socket(readers, protocol)

    def no_descriptor(*args: object) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    with monkeypatch.context() as patched:
        patched.setattr(socket, "socket", no_descriptor)
        send = port.serve(client.getsockname())
    assert readers.readers == [port]
    send(b"block 1")
    assert client.recvfrom(100) == (b"block 1", port.socket.getsockname())
    port.stopListening()
