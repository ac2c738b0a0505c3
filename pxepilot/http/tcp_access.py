"""
The one place that reaches into a Twisted TCP connection's internals, so that the
kernel can send an asset's body (C{os.sendfile}) straight to the connection's socket,
and so that a client that stopped reading can be told from a slow one.

Twisted has no public interface for writing to a transport's socket behind its back,
nor for asking whether the transport still holds bytes of its own, nor for being told
when the socket is writable again. Each private used here was checked against
B{Twisted 26.10.0} (C{twisted.internet.tcp.Connection} and
C{twisted.internet.abstract.FileDescriptor}), and C{tests/test_twisted_privates.py}
(for L{unsent_bytes}, C{tests/hostile/test_http_connections.py}) fails if one disappears or changes
shape:

  - C{TLS}: set on a connection once C{startTLS} has wrapped it. Its socket then
    carries ciphertext, and bytes written there directly would corrupt the stream.
  - C{socket}: the connection's socket, set by its constructor and deleted when the
    connection is lost. (C{getHandle()} is the public way to it, but it raises once
    the connection is gone, where this lets a lost connection count as not plain.)
  - C{dataBuffer} and C{_tempDataBuffer}: what the transport was given by C{write} and
    has not yet sent (the response headers, above all). A body sent by the kernel
    before these have gone out would overtake them on the wire. With C{offset} (how
    much of C{dataBuffer} is sent already) they also say how much a client that
    stopped reading leaves waiting (L{unsent_bytes}, for the HTTP write timeout).
  - C{abortConnection()} takes the connection out of the reactor at once and leaves
    closing its socket to C{connectionLost}, on the reactor's next turn, which copes
    with a socket already closed. L{drop_now} closes it in between, so that a
    connection refused or given up frees its descriptor before the next is accepted.
  - C{producerPaused} and C{startWriting()}: C{doWrite}, once the transport has sent
    all it holds and the socket is writable, resumes a registered push producer only
    if C{producerPaused} is set; C{startWriting} has the reactor watch the socket for
    writability even when the transport has nothing of its own to send.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import termios
from typing import Any

from attrs import frozen
from twisted.internet import tcp


@frozen
class PlainTCPSocket:
    """
    The socket of a plain (not TLS) Twisted TCP connection, for writing to directly.

    Build it with L{PlainTCPSocket.of}.

    @ivar connection: The connection.
    @ivar socket: Its socket, kept from when this was built: it stays usable (and
        closed) after the connection has let go of it.
    """

    connection: tcp.Connection
    socket: socket.socket

    @classmethod
    def of(cls, transport: object) -> PlainTCPSocket | None:
        """
        Access to C{transport}'s socket.

        @return: L{None} unless C{transport} is a plain TCP connection that still has
            its socket and the internals this class uses: its bytes must then go
            through its own C{write}.
        """
        if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
            return None
        sock = getattr(transport, "socket", None)
        # An upgraded Twisted without these internals leaves us no safe way to
        # interleave our writes with its own; writing through it is slower but correct.
        if sock is None or not all(hasattr(transport, name) for name in _INTERNALS):
            return None
        return cls(transport, sock)

    def has_buffered_data(self) -> bool:
        """
        Whether the connection still holds bytes it was given to write and has not
        sent: anything written to the socket directly must wait until it has.
        """
        return bool(self.connection.dataBuffer) or bool(self.connection._tempDataBuffer)

    def wait_until_writable(self) -> None:
        """
        Have the connection resume its registered push producer once it has sent all
        it holds and the socket is writable again.
        """
        self.connection.producerPaused = True
        self.connection.startWriting()


_INTERNALS = ("dataBuffer", "_tempDataBuffer", "producerPaused", "startWriting")


def drop_now(transport: Any) -> None:
    """
    Abort C{transport}'s connection, and with a TCP connection under it (plain or
    TLS), close its socket now, with a reset: its descriptor is free before the reactor
    accepts the next connection.

    Twisted closes an aborted connection's socket only on the reactor's next turn; in
    between, one turn may accept hundreds of connections from its listen queue, each
    holding a descriptor, past the process's limit.
    """
    transport.abortConnection()
    connection = _tcp_under(transport)
    sock = getattr(connection, "socket", None) if connection is not None else None
    if not isinstance(sock, socket.socket):
        return
    # A reset, as Twisted's own abort sends: no FIN handshake left to wait for.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


def _tcp_under(transport: object) -> tcp.Connection | None:
    """
    The TCP connection C{transport} is, or wraps (TLS is a protocol whose own
    C{transport} is the connection).
    """
    connection = transport
    # TLS wraps the connection once; anything deeper is not a layout we know.
    for _ in range(3):
        if isinstance(connection, tcp.Connection):
            return connection
        connection = getattr(connection, "transport", None)
    return None


def unsent_bytes(transport: object) -> int | None:
    """
    How many bytes written to C{transport} have not yet been taken by the client: what
    the TCP connection under it still holds, plus what waits in its socket's send queue
    (sent but not acknowledged, or not sent for want of window).

    With no new writes, the figure falls only as the client reads: how the write
    timeout tells a slow reader from one that stopped.

    Reads C{dataBuffer}, C{offset} and C{_tempDataBuffer} (see the module's docstring)
    and asks the kernel (C{TIOCOUTQ}, Linux's C{SIOCOUTQ} for a socket).

    @param transport: A TCP connection, or a wrapper over one (TLS, whose own
        C{transport} is the connection).
    @return: L{None} when C{transport} is no TCP connection with these internals, or the
        kernel cannot say (not Linux): the caller must judge progress otherwise.
    """
    connection = _tcp_under(transport)
    if connection is None:
        return None
    sock = getattr(connection, "socket", None)
    if sock is None or not all(hasattr(connection, name) for name in _HELD):
        return None
    held = len(connection.dataBuffer) - connection.offset
    held += sum(len(chunk) for chunk in connection._tempDataBuffer)
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, _INT.pack(0))
    except (OSError, ValueError):
        return None
    waiting: int = _INT.unpack(queued)[0]
    return held + waiting


_HELD = ("dataBuffer", "offset", "_tempDataBuffer")
_INT = struct.Struct("i")
_LINGER_RESET = struct.pack("ii", 1, 0)
