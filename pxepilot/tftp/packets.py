"""
TFTP datagrams: decoding and encoding as pure functions (RFC 1350, RFC 2347).

L{decode} accepts what real clients send, including firmware that pads requests with
zeros or leaves off the last NUL, and raises only L{PacketError} for anything else.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from attrs import field, frozen

OP_RRQ = 1
OP_WRQ = 2
OP_DATA = 3
OP_ACK = 4
OP_ERROR = 5
OP_OACK = 6

_OPCODE = struct.Struct("!H")
_OPCODE_BLOCK = struct.Struct("!HH")

# Longest option name or value kept from a request; real ones are a few characters.
_MAX_OPTION_TEXT = 64


class ErrorCode(IntEnum):
    """
    TFTP error codes (RFC 1350 appendix; 8 from RFC 2347).
    """

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TRANSFER_ID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


class PacketError(ValueError):
    """
    A datagram that is not a well-formed TFTP packet.
    """


@frozen
class RequestOption:
    """
    One option of a request, as sent.

    @ivar name: The name as the client spelled it (echoed back the same way).
    @ivar value: The value, as bytes.
    """

    name: str
    value: bytes

    @property
    def key(self) -> str:
        """
        The name, lower-cased: option names are case-insensitive (RFC 2347).
        """
        return self.name.lower()


@frozen
class ReadRequest:
    """
    RRQ: a client wants C{filename}.

    @ivar filename: The name as sent, bytes up to the first NUL.
    @ivar mode: The transfer mode, lower-cased (C{octet}, C{netascii}, ...).
    @ivar options: The options in the order sent; a repeated name keeps its first value.
    """

    filename: bytes
    mode: str
    options: tuple[RequestOption, ...] = ()


@frozen
class WriteRequest:
    """
    WRQ: a client wants to store C{filename}. pxe-pilot refuses every one.
    """

    filename: bytes
    mode: str
    options: tuple[RequestOption, ...] = ()


@frozen
class Data:
    """
    DATA: block C{block} (16 bits on the wire) of a transfer.
    """

    block: int
    payload: bytes


@frozen
class Ack:
    """
    ACK: the receiver has block C{block}.
    """

    block: int


@frozen
class Error:
    """
    ERROR: the transfer ends (except for code 5).
    """

    code: int
    message: str = field(default="")


@frozen
class OptionAck:
    """
    OACK: the options the server grants, as (name, value) pairs.
    """

    options: tuple[tuple[str, str], ...]


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck


def decode(datagram: bytes) -> Packet:
    """
    Decode one datagram.

    @raise PacketError: for anything that is not a TFTP packet.
    """
    if len(datagram) < 2:
        raise PacketError("shorter than an opcode")
    (opcode,) = _OPCODE.unpack_from(datagram)
    if opcode in (OP_RRQ, OP_WRQ):
        return _decode_request(opcode, datagram[2:])
    if opcode in (OP_DATA, OP_ACK, OP_ERROR):
        if len(datagram) < 4:
            raise PacketError("shorter than its header")
        (_, number) = _OPCODE_BLOCK.unpack_from(datagram)
        if opcode == OP_DATA:
            return Data(number, bytes(datagram[4:]))
        if opcode == OP_ACK:
            return Ack(number)
        return Error(number, _text(datagram[4:].split(b"\0", 1)[0]))
    if opcode == OP_OACK:
        fields = datagram[2:].split(b"\0")
        if fields and fields[-1] == b"":
            fields.pop()
        if len(fields) % 2:
            raise PacketError("OACK with an option without a value")
        pairs = zip(fields[::2], fields[1::2], strict=True)
        return OptionAck(tuple((_ascii(n), _ascii(v)) for n, v in pairs))
    raise PacketError(f"unknown opcode {opcode}")


def _decode_request(opcode: int, body: bytes) -> ReadRequest | WriteRequest:
    fields = body.split(b"\0")
    if len(fields) > 2 and fields[-1] == b"":
        # The empty string after the final NUL.
        fields.pop()
    if len(fields) < 2:
        raise PacketError("request without a mode")
    filename, mode_bytes = fields[0], fields[1]
    if not filename:
        raise PacketError("request with an empty file name")
    try:
        mode = mode_bytes.decode("ascii").lower()
    except UnicodeDecodeError:
        raise PacketError("request with a mode that is not ASCII") from None
    if not mode:
        raise PacketError("request with an empty mode")
    options: list[RequestOption] = []
    seen: set[str] = set()
    rest = fields[2:]
    # Pairs up to the first empty name: firmware that pads requests with zeros, and a
    # missing final NUL, both end the list there.
    for index in range(0, len(rest) - 1, 2):
        name, value = rest[index], rest[index + 1]
        if not name:
            break
        if len(name) > _MAX_OPTION_TEXT or len(value) > _MAX_OPTION_TEXT:
            continue
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            continue
        if text.lower() in seen:
            continue
        seen.add(text.lower())
        options.append(RequestOption(text, bytes(value)))
    kind = ReadRequest if opcode == OP_RRQ else WriteRequest
    return kind(bytes(filename), mode, tuple(options))


def encode(packet: Packet) -> bytes:
    """
    Encode one packet.
    """
    if isinstance(packet, ReadRequest | WriteRequest):
        opcode = OP_RRQ if isinstance(packet, ReadRequest) else OP_WRQ
        parts = [packet.filename, packet.mode.encode("ascii")]
        for option in packet.options:
            parts += [option.name.encode("ascii"), option.value]
        return _OPCODE.pack(opcode) + b"".join(p + b"\0" for p in parts)
    if isinstance(packet, Data):
        return _OPCODE_BLOCK.pack(OP_DATA, packet.block & 0xFFFF) + packet.payload
    if isinstance(packet, Ack):
        return _OPCODE_BLOCK.pack(OP_ACK, packet.block & 0xFFFF)
    if isinstance(packet, Error):
        message = packet.message.encode("ascii", "replace")
        return _OPCODE_BLOCK.pack(OP_ERROR, packet.code) + message + b"\0"
    return _OPCODE.pack(OP_OACK) + b"".join(
        name.encode("ascii") + b"\0" + value.encode("ascii") + b"\0"
        for name, value in packet.options
    )


def encode_error(code: ErrorCode, message: str) -> bytes:
    return encode(Error(code, message))


def _ascii(value: bytes) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise PacketError("option text that is not ASCII") from None


def _text(value: bytes) -> str:
    """
    Printable text of a client's error message, for logs.
    """
    decoded = value[:200].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in decoded)
