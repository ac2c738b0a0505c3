"""
The HTTPS listener's certificate: the one the operator gives (C{--tls-cert},
C{--tls-key}), or one pxe-pilot creates once, self-signed, in its state directory and
reuses on every start.

The Proxmox installer trusts an HTTPS answer server by one thing only: the SHA-256 of
its DER certificate, the C{cert_fingerprint} baked into the ISO or handed out by DHCP
or DNS. It ignores the names, the chain and the expiry. So what matters here is that
the fingerprint stays the same for as long as the operator wants it to: a generated
certificate is reused byte for byte, a damaged pair is refused rather than replaced,
and a new one is made only when asked (L{rotate}).

Only the loaders, L{rotate} and L{certificate_names} look outside their arguments
(files, the host's name); nothing here needs the reactor.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from attrs import field, frozen
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

GENERATED = "generated"
CONFIGURED = "configured"

#: Inside the state directory: the generated pair.
TLS_DIRECTORY = "tls"
CERTIFICATE_FILE = "server.crt"
KEY_FILE = "server.key"

#: How long a generated certificate is valid. The installer ignores expiry, so this
#: only keeps other clients (curl, browsers) from complaining for a long time.
VALIDITY_YEARS = 10

# The private keys a TLS server can prove itself with (and pyOpenSSL can hold).
_SIGNING_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)

_HEX = re.compile(r"[0-9A-F]{64}")
_UNSPECIFIED = {"0.0.0.0", "::"}


class TLSSetupError(Exception):
    """
    The certificate cannot be used; the message is one line naming the file and why.
    """


def fingerprint(der: bytes) -> str:
    """
    The installer's fingerprint of a certificate: the SHA-256 of its DER bytes as
    upper-case pairs joined by colons, as C{openssl x509 -fingerprint -sha256} prints.
    """
    return _pairs(hashlib.sha256(der).hexdigest().upper())


def normalise_fingerprint(text: str) -> str:
    """
    A fingerprint as a person may write it (colons or not, any case, spaces around)
    in the canonical form L{fingerprint} returns.

    @raise ValueError: C{text} is not 32 bytes of hex.
    """
    digits = text.strip().replace(":", "").upper()
    if not _HEX.fullmatch(digits):
        raise ValueError(
            "a certificate fingerprint is the SHA-256 of the certificate: 64 hex digits, "
            "with or without colons"
        )
    return _pairs(digits)


def _pairs(digits: str) -> str:
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


@frozen
class ServerCertificate:
    """
    The certificate the HTTPS listener presents, with the facts an operator needs.

    @ivar certificate_pem: The certificate in PEM; for a configured chain file the
        whole chain as given, leaf first.
    @ivar key_pem: The leaf's private key in PEM, unencrypted.
    @ivar fingerprint: The leaf's fingerprint (L{fingerprint}): what the installer pins.
    @ivar origin: C{"generated"} by pxe-pilot or C{"configured"} by the operator.
    @ivar not_after: When the leaf expires (aware, UTC).
    @ivar names: The leaf's subject alternative names as text, in its order.
    """

    certificate_pem: bytes
    key_pem: bytes = field(repr=False)
    fingerprint: str
    origin: str
    not_after: datetime
    names: tuple[str, ...]

    def context_factory(self) -> CertificateOptions:
        """
        A server TLS context presenting this certificate (and its chain), TLS 1.2 at
        least, with Twisted's choice of ciphers; for
        L{twisted.internet.endpoints.SSL4ServerEndpoint}.
        """
        leaf, *chain = x509.load_pem_x509_certificates(self.certificate_pem)
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        # Only signing keys get here (the loaders refuse the rest). pyOpenSSL 26 warns
        # that its own objects are deprecated in a context, but they are what
        # CertificateOptions documents taking.
        assert isinstance(key, _SIGNING_KEYS)
        return CertificateOptions(
            privateKey=PKey.from_cryptography_key(key),
            certificate=X509.from_cryptography(leaf),
            extraCertChain=[X509.from_cryptography(c) for c in chain],
            raiseMinimumTo=TLSVersion.TLSv1_2,
        )


class _Invalid(Exception):
    """
    A pair is unusable: C{which} says where the fault is (C{"certificate"}, C{"key"},
    or C{"pair"} for a key that is not the certificate's), the message says what.
    """

    def __init__(self, cause: str, which: str) -> None:
        super().__init__(cause)
        self.which = which


@frozen
class CertificateFacts:
    """
    What a certificate file says about its leaf, read without its key.

    @ivar fingerprint: The leaf's fingerprint (L{fingerprint}).
    @ivar not_after: When the leaf expires (aware, UTC).
    @ivar names: The leaf's subject alternative names as text, in its order.
    """

    fingerprint: str
    not_after: datetime
    names: tuple[str, ...]


def certificate_facts(cert_path: Path) -> CertificateFacts:
    """
    The facts of the operator's certificate file (a chain's first certificate).

    @raise TLSSetupError: it cannot be read or is not a PEM certificate.
    """
    label = f"--tls-cert {cert_path}"
    try:
        return _facts(_leaf(_read(cert_path, label)))
    except _Invalid as e:
        raise TLSSetupError(f"{label}: {e}") from None


def _leaf(certificate_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(certificate_pem)[0]
    except ValueError:
        raise _Invalid("not a PEM certificate", "certificate") from None


def _facts(leaf: x509.Certificate) -> CertificateFacts:
    try:
        alternative = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(str(name.value) for name in alternative.value)
    except x509.ExtensionNotFound:
        names = ()
    return CertificateFacts(
        fingerprint=fingerprint(leaf.public_bytes(serialization.Encoding.DER)),
        not_after=leaf.not_valid_after_utc,
        names=names,
    )


def _server_certificate(certificate_pem: bytes, key_pem: bytes, origin: str) -> ServerCertificate:
    """
    The certificate made of a PEM certificate (or chain, leaf first) and its key.

    @raise _Invalid: one of them is not usable, or the key is not the leaf's.
    """
    leaf = _leaf(certificate_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        # cryptography's way of saying a password is needed.
        raise _Invalid(
            "the key is encrypted; pxe-pilot needs it without a passphrase", "key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _Invalid("not a PEM private key", "key") from None
    if not isinstance(key, _SIGNING_KEYS):
        raise _Invalid("not a key a TLS server can sign with", "key")
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise _Invalid("does not match the certificate", "pair")
    facts = _facts(leaf)
    return ServerCertificate(
        certificate_pem=certificate_pem,
        key_pem=key_pem,
        fingerprint=facts.fingerprint,
        origin=origin,
        not_after=facts.not_after,
        names=facts.names,
    )


def _public_bytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pair(
    cert_path: Path, key_path: Path, origin: str, cert_label: str, key_label: str, advice: str
) -> ServerCertificate:
    """
    Read and check a pair; a failure names the file as C{cert_label} or C{key_label}
    and ends with C{advice} when there is one.
    """
    certificate_pem = _read(cert_path, cert_label, advice)
    key_pem = _read(key_path, key_label, advice)
    try:
        return _server_certificate(certificate_pem, key_pem, origin)
    except _Invalid as e:
        if e.which == "certificate":
            message = f"{cert_label}: {e}"
        elif e.which == "key":
            message = f"{key_label}: {e}"
        else:
            message = f"{key_label}: {e} in {cert_path}"
        raise TLSSetupError(_advised(message, advice)) from None


def _read(path: Path, label: str, advice: str = "") -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TLSSetupError(_advised(f"{label}: {_reason(e)}", advice)) from None


def _advised(message: str, advice: str) -> str:
    return f"{message}; {advice}" if advice else message


def _reason(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    return (error.strerror or str(error)).lower()


def load_configured(cert_path: Path, key_path: Path) -> ServerCertificate:
    """
    The operator's certificate (a chain file's first certificate is the leaf) and key.

    @raise TLSSetupError: a file cannot be read, is not PEM, the key is encrypted, or
        the key is not the certificate's.
    """
    return _load_pair(
        cert_path,
        key_path,
        CONFIGURED,
        cert_label=f"--tls-cert {cert_path}",
        key_label=f"--tls-key {key_path}",
        advice="",
    )


def generated_paths(state_dir: Path) -> tuple[Path, Path]:
    """
    Where the generated certificate and its key live in a state directory.
    """
    directory = state_dir / TLS_DIRECTORY
    return directory / CERTIFICATE_FILE, directory / KEY_FILE


def load_generated(state_dir: Path) -> ServerCertificate | None:
    """
    The certificate pxe-pilot generated in C{state_dir}; L{None} when there is none.

    @raise TLSSetupError: only one of the pair is there, or they are not usable together.
    """
    cert_path, key_path = generated_paths(state_dir)
    advice = "remove both to get a new certificate"
    have_cert, have_key = _exists(cert_path), _exists(key_path)
    if not have_cert and not have_key:
        return None
    if not have_key:
        raise TLSSetupError(f"{cert_path}: its key {key_path} is missing; {advice}")
    if not have_cert:
        raise TLSSetupError(f"{key_path}: its certificate {cert_path} is missing; {advice}")
    return _load_pair(cert_path, key_path, GENERATED, str(cert_path), str(key_path), advice)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as e:
        raise TLSSetupError(f"{path}: {_reason(e)}") from None


def load_or_create(state_dir: Path, names: Sequence[str], now: datetime) -> ServerCertificate:
    """
    The generated certificate in C{state_dir/tls}: the one there, unchanged, or, when
    there is none, a new one for C{names} valid from C{now}.

    An existing pair is reused even when C{names} changed since it was made: machines
    already pin its fingerprint, and the installer ignores names. A pair that is half
    there or does not match is refused, never replaced, for the same reason.

    @param now: The current time, aware.
    @raise TLSSetupError: the pair is damaged (the message says to remove both), or
        the new one cannot be written.
    """
    existing = load_generated(state_dir)
    if existing is not None:
        return existing
    return rotate(state_dir, names, now)


def rotate(state_dir: Path, names: Sequence[str], now: datetime) -> ServerCertificate:
    """
    Replace the generated pair in C{state_dir/tls} with a new one for C{names}, valid
    from C{now}; each file replaced atomically, mode 0600, in a directory of mode 0700.

    A crash between the two renames leaves a pair that does not match, which the next
    start refuses (with advice) rather than serving a key with the wrong certificate.

    @raise TLSSetupError: the files cannot be written.
    """
    certificate_pem, key_pem = new_self_signed(names, now)
    cert_path, key_path = generated_paths(state_dir)
    directory = cert_path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode passes through the umask, and an existing directory keeps its own.
        directory.chmod(0o700)
        _write_atomically(key_path, key_pem)
        _write_atomically(cert_path, certificate_pem)
    except OSError as e:
        where = e.filename if e.filename else directory
        raise TLSSetupError(f"{where}: cannot write the certificate: {_reason(e)}") from None
    return _server_certificate(certificate_pem, key_pem, GENERATED)


def _write_atomically(path: Path, data: bytes) -> None:
    """
    Replace C{path} by C{data} so a reader sees the old file or the new, never part.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # Created 0600 so the key is never readable by others, not even for a moment.
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        try:
            # The umask can only take bits away; this makes the mode exactly 0600.
            os.fchmod(descriptor, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    # The rename is durable only once the directory is on disk too.
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def new_self_signed(names: Sequence[str], now: datetime) -> tuple[bytes, bytes]:
    """
    A new ECDSA P-256 key and a self-signed server certificate for it, both PEM.

    The certificate is for C{names} (addresses as IP names, the rest as DNS names,
    empty ones and ones DNS cannot hold skipped), valid from a day before C{now}
    (clocks disagree) for L{VALIDITY_YEARS} years, and fit only for a TLS server.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pxe-pilot")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(_years_after(now, VALIDITY_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    alternative = _alternative_names(names)
    if alternative:
        # An empty SubjectAlternativeName is invalid; the subject names it then.
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _alternative_names(names: Sequence[str]) -> list[x509.GeneralName]:
    alternative: list[x509.GeneralName] = []
    for name in _unique(names):
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        try:
            # A certificate holds DNS names in their ASCII form.
            alternative.append(x509.DNSName(name.encode("idna").decode("ascii")))
        except UnicodeError:
            # Not a name DNS can hold; the certificate is as good without it.
            continue
    return alternative


def _years_after(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        # 29 February in a year that has none.
        return moment.replace(year=moment.year + years, day=28)


def certificate_names(interface: str | None, public_url: str | None) -> tuple[str, ...]:
    """
    The names a generated certificate is for: the bound interface's address (not
    C{0.0.0.0} or C{::}), the public URL's host, this host's name and fully qualified
    name, and C{localhost}; each once, in that order.

    The installer ignores them; they are for people and tools that check names.
    """
    candidates = [
        interface if interface not in _UNSPECIFIED else None,
        urlsplit(public_url).hostname if public_url else None,
        socket.gethostname(),
        socket.getfqdn(),
        "localhost",
    ]
    return _unique([c for c in candidates if c])


def _unique(names: Sequence[str]) -> tuple[str, ...]:
    """
    The non-empty names, stripped, each once (DNS names compare without case).
    """
    seen: set[str] = set()
    kept: list[str] = []
    for name in (n.strip() for n in names):
        if name and name.lower() not in seen:
            seen.add(name.lower())
            kept.append(name)
    return tuple(kept)


@implementer(IPolicyForHTTPS)
@frozen
class PinnedPolicy:
    """
    For a client of pxe-pilot (the C{pxe-pilot} command): trust exactly the server
    certificate whose SHA-256 fingerprint is C{pinned}, as the Proxmox installer does,
    whatever its names, issuer or expiry.
    """

    pinned: str

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _PinnedConnections(normalise_fingerprint(self.pinned))


@implementer(IOpenSSLClientConnectionCreator)
class _PinnedConnections:
    def __init__(self, pinned: str) -> None:
        self._pinned = pinned
        self._context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._context.set_verify(SSL.VERIFY_PEER, self._verify)

    def _verify(
        self, connection: SSL.Connection, certificate: X509, error: int, depth: int, ok: int
    ) -> bool:
        # OpenSSL asks about every certificate of the chain, the leaf last (depth 0):
        # the leaf's fingerprint alone decides.
        if depth != 0:
            return True
        der = certificate.to_cryptography().public_bytes(serialization.Encoding.DER)
        return fingerprint(der) == self._pinned

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection
