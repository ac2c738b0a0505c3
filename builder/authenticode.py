"""
Who signed an EFI program: the Authenticode signatures of a PE file (shim, GRUB, a
kernel with an EFI stub), and the vendor certificate shim carries.

A PE file's security directory (data directory 4) points at a list of
C{WIN_CERTIFICATE} structures; each of type C{WIN_CERT_TYPE_PKCS_SIGNED_DATA} holds a
PKCS#7 SignedData. The certificates are read with the C{cryptography} library. It does
not expose the SignedData's signer information, so the signing certificate is the one
whose issuer and serial number (the C{IssuerAndSerialNumber} of the signer information,
as C{cryptography} encodes them) appear in the signature; failing that, the one
certificate of the bag that issued no other. Chains are checked with
C{Certificate.verify_directly_issued_by}, never by hand.

Nothing here says whether a signature is valid for the file's bytes: firmware and shim
decide that. What is recorded is who signed, and whether that signer chains to the
certificate a shim trusts, which is what decides whether a set of pieces can boot.
"""

from __future__ import annotations

import struct

from attrs import frozen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
SECURITY_DIRECTORY = 4
MAX_SIGNATURES = 16
MAX_CHAIN = 8
VENDOR_SECTION = ".vendor_cert"
# EFI_CERT_X509_GUID, as stored (mixed-endian), for a vendor database in shim.
EFI_CERT_X509 = bytes.fromhex("a159c0a5e494a74a87b5ab155c2bf072")


class PeError(ValueError):
    """
    The file is not a PE image, or its signature or vendor certificate is damaged; the
    message says what was found.
    """


class NotPe(PeError):
    """
    The file is not a PE image at all (as opposed to a damaged one).
    """


@frozen
class Section:
    name: str
    offset: int
    size: int


@frozen
class PeImage:
    """
    What is needed of a PE image's headers.

    @ivar sections: Its sections, in order, by their file offsets and raw sizes.
    @ivar security: The security directory's file offset and size (C{(0, 0)} if unsigned).
    """

    sections: tuple[Section, ...]
    security: tuple[int, int]

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


@frozen(eq=False)
class Signature:
    """
    One Authenticode signature.

    @ivar signer: The signing certificate.
    @ivar certificates: Every certificate the signature carries (the signer among them).
    """

    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]

    @property
    def subject(self) -> str:
        return subject(self.signer)


def parse_pe(data: bytes) -> PeImage:
    """
    @raise PeError: when C{data} is not a PE image whose headers fit in it.
    """
    try:
        if data[:2] != b"MZ":
            raise NotPe("not a PE image (no MZ header)")
        pe = struct.unpack_from("<I", data, 0x3C)[0]
        if data[pe : pe + 4] != b"PE\0\0":
            raise NotPe("not a PE image (no PE signature)")
        count, optional_size = (struct.unpack_from("<H", data, pe + i)[0] for i in (6, 20))
        # Names longer than 8 bytes (C{.vendor_cert}) are C{/N}: offset N in the COFF
        # string table, which follows the symbol table.
        symbols, symbol_count = struct.unpack_from("<II", data, pe + 12)
        strings = symbols + 18 * symbol_count if symbols else 0
        optional = pe + 24
        magic = struct.unpack_from("<H", data, optional)[0]
        if magic == 0x10B:
            directories, count_at = optional + 96, optional + 92
        elif magic == 0x20B:
            directories, count_at = optional + 112, optional + 108
        else:
            raise NotPe(f"not a PE image (optional header magic {magic:#x})")
        security = (0, 0)
        if struct.unpack_from("<I", data, count_at)[0] > SECURITY_DIRECTORY:
            security = struct.unpack_from("<II", data, directories + 8 * SECURITY_DIRECTORY)
        sections = []
        table = optional + optional_size
        for index in range(count):
            raw = data[table + 40 * index : table + 40 * index + 40]
            if len(raw) < 40:
                raise PeError("truncated PE image (section table)")
            name = raw[:8].rstrip(b"\0").decode("ascii", "replace")
            if name.startswith("/") and name[1:].isdigit() and strings:
                at = strings + int(name[1:])
                end = data.find(b"\0", at, at + 256)
                name = data[at : end if end >= 0 else at].decode("ascii", "replace")
            size, offset = struct.unpack_from("<II", raw, 16)
            sections.append(Section(name, offset, size))
    except struct.error:
        raise PeError("truncated PE image (headers)") from None
    offset, size = security
    if size and (offset + size > len(data) or offset == 0):
        raise PeError(
            f"truncated or damaged PE image: its signature is at {offset}+{size}, "
            f"the file has {len(data)} bytes"
        )
    return PeImage(tuple(sections), (offset, size) if size else (0, 0))


def subject(certificate: x509.Certificate) -> str:
    """
    A certificate's subject, as RFC 4514 writes it (C{CN=...,O=...}).
    """
    return certificate.subject.rfc4514_string()


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _der_length(data: bytes) -> int:
    """
    The length of the DER value at the start of C{data}, header included (the
    signature is followed by padding to 8 bytes, which the parser refuses).
    """
    if len(data) < 2 or data[0] != 0x30:
        raise PeError("damaged signature: not a PKCS#7 structure")
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if not 1 <= count <= 4 or len(data) < 2 + count:
        raise PeError("damaged signature: bad PKCS#7 length")
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    length = len(body)
    header = bytes([length]) if length < 0x80 else bytes([0x81, length])
    return b"\x02" + header + body


def _signer(blob: bytes, certificates: list[x509.Certificate]) -> x509.Certificate:
    # A certificate holds its own issuer and serial number too, but never adjacent and
    # in that order: a match is the signer information's IssuerAndSerialNumber.
    named = [
        c for c in certificates if c.issuer.public_bytes() + _der_integer(c.serial_number) in blob
    ]
    if len(named) == 1:
        return named[0]
    leaves = [c for c in certificates if not any(c.subject == o.issuer for o in certificates)]
    if len(leaves) == 1:
        return leaves[0]
    raise PeError("damaged signature: cannot tell which certificate signed")


def signatures(data: bytes, image: PeImage | None = None) -> list[Signature]:
    """
    The Authenticode signatures of the PE image C{data}, first one first; empty when it
    is not signed.

    @raise PeError: when the image or a signature is damaged.
    """
    image = image or parse_pe(data)
    offset, size = image.security
    found: list[Signature] = []
    end = offset + size
    while offset + 8 <= end and len(found) < MAX_SIGNATURES:
        length, _revision, kind = struct.unpack_from("<IHH", data, offset)
        if length < 8 or offset + length > end:
            raise PeError(f"damaged signature: a certificate entry of {length} bytes")
        if kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA:
            blob = data[offset + 8 : offset + length]
            blob = blob[: _der_length(blob)]
            try:
                certificates = pkcs7.load_der_pkcs7_certificates(blob)
            except ValueError as e:
                raise PeError(f"damaged signature: {e}") from None
            if not certificates:
                raise PeError("damaged signature: it carries no certificate")
            found.append(Signature(_signer(blob, certificates), tuple(certificates)))
        offset += (length + 7) & ~7
    return found


def vendor_certificate(data: bytes, image: PeImage | None = None) -> x509.Certificate | None:
    """
    The certificate a shim trusts besides the firmware's: the first one of its
    C{.vendor_cert} section (a DER certificate, or a list of EFI signatures); C{None}
    when it has no such section or the section is empty.

    @raise PeError: when the section is damaged.
    """
    image = image or parse_pe(data)
    section = image.section(VENDOR_SECTION)
    if section is None:
        return None
    raw = data[section.offset : section.offset + section.size]
    if len(raw) < 16:
        raise PeError("damaged shim: its .vendor_cert section is truncated")
    size, _deny_size, at, _deny_at = struct.unpack_from("<IIII", raw, 0)
    if size == 0:
        return None
    if at + size > len(raw):
        raise PeError("damaged shim: its vendor certificate lies outside its section")
    blob = raw[at : at + size]
    try:
        return x509.load_der_x509_certificate(blob)
    except ValueError:
        pass
    certificate = _from_signature_list(blob)
    if certificate is None:
        raise PeError("damaged shim: its vendor certificate cannot be read")
    return certificate


def _from_signature_list(blob: bytes) -> x509.Certificate | None:
    offset = 0
    while offset + 28 <= len(blob):
        kind = blob[offset : offset + 16]
        list_size, header_size, entry_size = struct.unpack_from("<III", blob, offset + 16)
        if list_size < 28 or offset + list_size > len(blob) or entry_size <= 16:
            return None
        if kind == EFI_CERT_X509:
            start = offset + 28 + header_size + 16
            try:
                return x509.load_der_x509_certificate(
                    blob[start : offset + 28 + header_size + entry_size]
                )
            except ValueError:
                return None
        offset += list_size
    return None


def chains_to(signature: Signature, anchor: x509.Certificate) -> bool:
    """
    Whether C{signature}'s signer is C{anchor}, or was issued by it directly or through
    the certificates the signature carries.
    """
    anchor_der = anchor.public_bytes(Encoding.DER)
    current = signature.signer
    for _ in range(MAX_CHAIN):
        current_der = current.public_bytes(Encoding.DER)
        if current_der == anchor_der or _issued_by(current, anchor):
            return True
        parent = next(
            (
                c
                for c in signature.certificates
                if c.public_bytes(Encoding.DER) != current.public_bytes(Encoding.DER)
                and _issued_by(current, c)
            ),
            None,
        )
        if parent is None:
            return False
        current = parent
    return False


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def vendor_name(certificate: x509.Certificate) -> str:
    """
    A short name for whoever a certificate belongs to, for messages: the first word of
    its common name (C{Debian} for I{Debian Secure Boot CA}), else its organisation.
    """
    name = common_name(certificate.subject)
    if name and name.split():
        return name.split()[0]
    organisations = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if organisations:
        return str(organisations[0].value)
    return subject(certificate) or "unnamed"


def signer_vendor(signature: Signature) -> str:
    """
    Whoever a signer belongs to: the name of its issuer (the vendor's CA), else of the
    signer itself.
    """
    name = common_name(signature.signer.issuer)
    if name and name.split():
        return name.split()[0]
    return vendor_name(signature.signer)
