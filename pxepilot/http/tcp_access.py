"""
The one place that reaches into a Twisted TCP connection's internals, so that the
kernel can send an asset's body (C{os.sendfile}) straight to the connection's socket.

Twisted has no public interface for writing to a transport's socket behind its back,
nor for asking whether the transport still holds bytes of its own, nor for being told
when the socket is writable again. Each private used here was checked against
B{Twisted 26.10.0} (C{twisted.internet.tcp.Connection} and
C{twisted.internet.abstract.FileDescriptor}), and C{tests/test_twisted_privates.py}
fails if one disappears or changes shape:

  - C{TLS}: set on a connection once C{startTLS} has wrapped it. Its socket then
    carries ciphertext, and bytes written there directly would corrupt the stream.
  - C{socket}: the connection's socket, set by its constructor and deleted when the
    connection is lost. (C{getHandle()} is the public way to it, but it raises once
    the connection is gone, where this lets a lost connection count as not plain.)
  - C{dataBuffer} and C{_tempDataBuffer}: what the transport was given by C{write} and
    has not yet sent (the response headers, above all). A body sent by the kernel
    before these have gone out would overtake them on the wire.
  - C{producerPaused} and C{startWriting()}: C{doWrite}, once the transport has sent
    all it holds and the socket is writable, resumes a registered push producer only
    if C{producerPaused} is set; C{startWriting} has the reactor watch the socket for
    writability even when the transport has nothing of its own to send.
"""

from __future__ import annotations

import socket

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
