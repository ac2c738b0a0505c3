"""
The HTTPS certificate: the fingerprint the installer pins, the generated certificate
that survives restarts, the operator's certificate and its errors, and a real TLS
handshake on loopback that presents the certificate with the published fingerprint.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from pxepilot.tls import (
    TLSSetupError,
    certificate_facts,
    certificate_names,
    fingerprint,
    load_configured,
    load_or_create,
    normalise_fingerprint,
    rotate,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
NAMES = ("192.0.2.10", "2001:db8::10", "pxe.example.com", "", "localhost", "bücher.example")


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def openssl_fingerprint(pem: bytes) -> str:
    """
    The fingerprint as the installer docs and C{openssl x509 -fingerprint -sha256} show it.
    """
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def one_line(error: pytest.ExceptionInfo[TLSSetupError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def issue(
    subject_key: CertificateIssuerPrivateKeyTypes,
    name: str,
    issuer_key: CertificateIssuerPrivateKeyTypes | None = None,
    issuer_name: str | None = None,
    ca: bool = False,
) -> bytes:
    """
    A PEM certificate for C{subject_key}, self-signed unless an issuer is given.
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(issuer_key or subject_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: CertificateIssuerPrivateKeyTypes, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_pair(directory: Path, certificate: bytes, key: bytes) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate)
    key_path.write_bytes(key)
    return cert_path, key_path


def test_fingerprint_is_the_sha256_of_the_der_certificate(tmp_path: Path) -> None:
    """
    L{fingerprint} of the DER certificate is what OpenSSL prints: upper-case pairs of
    the SHA-256 joined by colons.
    """
    pem = load_or_create(tmp_path, NAMES, NOW).certificate_pem
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    assert fingerprint(der) == openssl_fingerprint(pem)
    assert fingerprint(der).count(":") == 31


DIGEST = hashlib.sha256(b"pxe-pilot").hexdigest()
CANONICAL = ":".join(DIGEST[i : i + 2] for i in range(0, 64, 2)).upper()


@pytest.mark.parametrize(
    "written",
    [CANONICAL, CANONICAL.lower(), DIGEST, DIGEST.upper(), f"  {CANONICAL}\n", f" {DIGEST} "],
)
def test_normalise_accepts_every_way_of_writing_a_fingerprint(written: str) -> None:
    """
    Colons or none, any case, spaces around: all mean the same fingerprint.
    """
    assert normalise_fingerprint(written) == CANONICAL


@pytest.mark.parametrize(
    "written",
    [DIGEST[:62], CANONICAL[:-3], "zz" * 32, DIGEST[:-1] + "g", "", "   ", DIGEST + "00"],
    ids=["31-bytes", "31-pairs", "not-hex", "one-non-hex", "empty", "blank", "33-bytes"],
)
def test_normalise_refuses_what_is_not_32_bytes_of_hex(written: str) -> None:
    """
    Anything but 32 bytes of hex is refused with a one-line message.
    """
    with pytest.raises(ValueError, match="64 hex digits") as error:
        normalise_fingerprint(written)
    assert "\n" not in str(error.value)


def test_the_first_start_creates_a_private_pair(tmp_path: Path) -> None:
    """
    With no certificate yet, one is created: both files mode 0600 in a 0700
    directory, no temporary file left behind, and what is returned is what is on disk.
    """
    created = load_or_create(tmp_path, NAMES, NOW)
    directory = tmp_path / "tls"
    assert sorted(files_of(directory)) == ["server.crt", "server.key"]
    assert mode(directory) == 0o700
    assert mode(directory / "server.crt") == 0o600
    assert mode(directory / "server.key") == 0o600
    assert (directory / "server.crt").read_bytes() == created.certificate_pem
    assert (directory / "server.key").read_bytes() == created.key_pem
    assert created.origin == "generated"
    assert created.fingerprint == openssl_fingerprint(created.certificate_pem)


def test_the_certificate_survives_a_restart(tmp_path: Path) -> None:
    """
    The next start reuses the pair byte for byte, whatever names it is given now:
    machines pin its fingerprint.
    """
    first = load_or_create(tmp_path, NAMES, NOW)
    before = files_of(tmp_path / "tls")
    second = load_or_create(tmp_path, ["198.51.100.1"], NOW + timedelta(days=400))
    assert second == first
    assert second.fingerprint == first.fingerprint
    assert files_of(tmp_path / "tls") == before


def test_the_generated_certificate_names_and_key(tmp_path: Path) -> None:
    """
    Addresses become IP names, the rest DNS names (in their ASCII form), empty ones are
    skipped; the key is ECDSA P-256 and the certificate is a self-signed server
    certificate for ten years.
    """
    created = load_or_create(tmp_path, NAMES, NOW)
    certificate = x509.load_pem_x509_certificate(created.certificate_pem)
    alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert alternative.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.10"),
        ipaddress.ip_address("2001:db8::10"),
    ]
    assert alternative.value.get_values_for_type(x509.DNSName) == [
        "pxe.example.com",
        "localhost",
        "xn--bcher-kva.example",
    ]
    assert created.names == (
        "192.0.2.10",
        "2001:db8::10",
        "pxe.example.com",
        "localhost",
        "xn--bcher-kva.example",
    )
    key = serialization.load_pem_private_key(created.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert certificate.subject == certificate.issuer
    assert certificate.subject.rfc4514_string() == "CN=pxe-pilot"
    assert certificate.not_valid_before_utc == NOW - timedelta(days=1)
    assert certificate.not_valid_after_utc == NOW.replace(year=NOW.year + 10)
    assert created.not_after == certificate.not_valid_after_utc
    extensions = certificate.extensions
    assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is False
    assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]


def test_two_certificates_differ(tmp_path: Path) -> None:
    """
    Each certificate has its own key and serial: two state directories never share a
    fingerprint.
    """
    one = load_or_create(tmp_path / "a", NAMES, NOW)
    other = load_or_create(tmp_path / "b", NAMES, NOW)
    assert one.fingerprint != other.fingerprint
    assert one.key_pem != other.key_pem


@pytest.mark.parametrize("missing", ["server.key", "server.crt"])
def test_half_a_pair_is_refused_and_left_alone(tmp_path: Path, missing: str) -> None:
    """
    With only one of the two files, start-up fails naming the file and saying to remove
    both; the remaining file is not touched and nothing is created.
    """
    load_or_create(tmp_path, NAMES, NOW)
    (tmp_path / "tls" / missing).unlink()
    before = files_of(tmp_path / "tls")
    with pytest.raises(TLSSetupError) as error:
        load_or_create(tmp_path, NAMES, NOW)
    message = one_line(error)
    assert str(tmp_path / "tls" / missing) in message
    assert "remove both to get a new certificate" in message
    assert files_of(tmp_path / "tls") == before


def test_a_mismatched_pair_is_refused_and_left_alone(tmp_path: Path) -> None:
    """
    A key that is not the certificate's is refused, naming both files, and neither is
    replaced.
    """
    load_or_create(tmp_path, NAMES, NOW)
    other = load_or_create(tmp_path / "other", NAMES, NOW)
    key_path = tmp_path / "tls" / "server.key"
    key_path.write_bytes(other.key_pem)
    before = files_of(tmp_path / "tls")
    with pytest.raises(TLSSetupError) as error:
        load_or_create(tmp_path, NAMES, NOW)
    assert one_line(error) == (
        f"{key_path}: does not match the certificate in {tmp_path / 'tls' / 'server.crt'}; "
        "remove both to get a new certificate"
    )
    assert files_of(tmp_path / "tls") == before


def test_a_damaged_generated_certificate_is_refused(tmp_path: Path) -> None:
    """
    A generated certificate file that is no longer PEM is refused, not regenerated.
    """
    load_or_create(tmp_path, NAMES, NOW)
    cert_path = tmp_path / "tls" / "server.crt"
    cert_path.write_bytes(b"truncated")
    with pytest.raises(TLSSetupError) as error:
        load_or_create(tmp_path, NAMES, NOW)
    assert one_line(error) == (
        f"{cert_path}: not a PEM certificate; remove both to get a new certificate"
    )
    assert cert_path.read_bytes() == b"truncated"


def test_rotate_replaces_the_pair(tmp_path: Path) -> None:
    """
    Rotating gives a new fingerprint, written with the same modes, and the next start
    serves the new certificate.
    """
    old = load_or_create(tmp_path, NAMES, NOW)
    new = rotate(tmp_path, NAMES, NOW)
    directory = tmp_path / "tls"
    assert new.fingerprint != old.fingerprint
    assert new.key_pem != old.key_pem
    assert sorted(files_of(directory)) == ["server.crt", "server.key"]
    assert mode(directory) == 0o700
    assert mode(directory / "server.crt") == 0o600
    assert mode(directory / "server.key") == 0o600
    assert load_or_create(tmp_path, NAMES, NOW) == new


def test_a_configured_pair(tmp_path: Path) -> None:
    """
    The operator's ECDSA certificate and key load with the certificate's fingerprint,
    names and expiry, marked as configured.
    """
    key = ec.generate_private_key(ec.SECP384R1())
    pem = issue(key, "answers.example.com")
    cert_path, key_path = write_pair(tmp_path, pem, key_pem(key))
    loaded = load_configured(cert_path, key_path)
    assert loaded.origin == "configured"
    assert loaded.fingerprint == openssl_fingerprint(pem)
    assert loaded.names == ("answers.example.com",)
    assert loaded.not_after == NOW + timedelta(days=30)
    assert loaded.certificate_pem == pem


def test_a_configured_rsa_pair(tmp_path: Path) -> None:
    """
    An RSA pair is as good as an ECDSA one, and makes a TLS context.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = issue(key, "answers.example.com")
    cert_path, key_path = write_pair(tmp_path, pem, key_pem(key))
    loaded = load_configured(cert_path, key_path)
    assert loaded.fingerprint == openssl_fingerprint(pem)
    assert loaded.context_factory().getContext() is not None


def test_a_chain_file_counts_its_leaf(tmp_path: Path) -> None:
    """
    In a chain file (leaf first, then the issuer) the leaf's fingerprint is the one
    the installer must pin.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(ca_key, "Example CA", ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(leaf_key, "answers.example.com", issuer_key=ca_key, issuer_name="Example CA")
    cert_path, key_path = write_pair(tmp_path, leaf + ca, key_pem(leaf_key))
    loaded = load_configured(cert_path, key_path)
    assert loaded.fingerprint == openssl_fingerprint(leaf)
    assert loaded.fingerprint != openssl_fingerprint(ca)
    assert certificate_facts(cert_path).fingerprint == loaded.fingerprint
    assert loaded.context_factory().getContext() is not None


def test_configured_files_that_are_not_pem(tmp_path: Path) -> None:
    """
    Garbage in either file is refused with the option, the file and the cause.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    good_cert, good_key = issue(key, "a.example"), key_pem(key)
    cert_path, key_path = write_pair(tmp_path, b"not a certificate\n", good_key)
    with pytest.raises(TLSSetupError) as error:
        load_configured(cert_path, key_path)
    assert one_line(error) == f"--tls-cert {cert_path}: not a PEM certificate"
    cert_path, key_path = write_pair(tmp_path, good_cert, b"-----BEGIN PRIVATE KEY-----\nxx\n")
    with pytest.raises(TLSSetupError) as error:
        load_configured(cert_path, key_path)
    assert one_line(error) == f"--tls-key {key_path}: not a PEM private key"


def test_a_configured_key_of_another_certificate(tmp_path: Path) -> None:
    """
    A key that is not the certificate's is refused naming both files.
    """
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, issue(key, "a.example"), key_pem(other))
    with pytest.raises(TLSSetupError) as error:
        load_configured(cert_path, key_path)
    assert one_line(error) == (
        f"--tls-key {key_path}: does not match the certificate in {cert_path}"
    )


def test_an_encrypted_configured_key(tmp_path: Path) -> None:
    """
    A key behind a passphrase is refused: pxe-pilot starts unattended.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, issue(key, "a.example"), key_pem(key, b"secret"))
    with pytest.raises(TLSSetupError) as error:
        load_configured(cert_path, key_path)
    assert one_line(error) == (
        f"--tls-key {key_path}: the key is encrypted; pxe-pilot needs it without a passphrase"
    )


def test_a_missing_configured_file(tmp_path: Path) -> None:
    """
    A file that is not there is named with its option.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, issue(key, "a.example"), key_pem(key))
    key_path.unlink()
    with pytest.raises(TLSSetupError) as error:
        load_configured(cert_path, key_path)
    assert one_line(error) == f"--tls-key {key_path}: no such file"


def test_a_directory_given_as_a_file(tmp_path: Path) -> None:
    """
    A directory where the certificate should be is named with its option.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    _, key_path = write_pair(tmp_path, issue(key, "a.example"), key_pem(key))
    with pytest.raises(TLSSetupError) as error:
        load_configured(tmp_path, key_path)
    assert one_line(error) == f"--tls-cert {tmp_path}: is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_configured_file(tmp_path: Path) -> None:
    """
    A file pxe-pilot may not read is named with its option and the cause.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, issue(key, "a.example"), key_pem(key))
    key_path.chmod(0)
    with pytest.raises(TLSSetupError) as error:
        load_configured(cert_path, key_path)
    assert one_line(error) == f"--tls-key {key_path}: permission denied"


def test_certificate_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The bound address, the public URL's host, the host name, its FQDN and localhost,
    each once (DNS names compare without case) and in that order; an unspecified
    address is no name.
    """
    monkeypatch.setattr(socket, "gethostname", lambda: "pxe")
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "pxe.example.com")
    assert certificate_names("192.0.2.10", "https://answers.example.com:8443/") == (
        "192.0.2.10",
        "answers.example.com",
        "pxe",
        "pxe.example.com",
        "localhost",
    )
    assert certificate_names("0.0.0.0", "http://[2001:db8::1]/") == (
        "2001:db8::1",
        "pxe",
        "pxe.example.com",
        "localhost",
    )
    # A host differing only in case is the same name.
    assert certificate_names("::", "https://PXE.Example.com/") == (
        "pxe.example.com",
        "pxe",
        "localhost",
    )
    assert certificate_names(None, None) == ("pxe", "pxe.example.com", "localhost")
    # An IPv6 interface and a public URL naming the same address: one IP name.
    assert certificate_names("fd00:77::1", "http://[FD00:77::1]:8080/") == (
        "fd00:77::1",
        "pxe",
        "pxe.example.com",
        "localhost",
    )


def peer_certificate(port: int) -> tuple[bytes, str | None]:
    """
    Connect to 127.0.0.1:C{port} as the installer does (no verification) and return
    the server's DER certificate and the TLS version agreed.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der, tls.version()


@pytest_twisted.ensureDeferred
async def test_a_tls_client_gets_the_certificate_with_the_published_fingerprint(
    tmp_path: Path,
) -> None:
    """
    A real handshake on loopback with L{ServerCertificate.context_factory} presents
    the certificate whose DER SHA-256 is the fingerprint the installer is given, over
    TLS 1.2 or newer.
    """
    certificate = load_or_create(tmp_path, ["127.0.0.1"], NOW)
    endpoint = SSL4ServerEndpoint(
        reactor(), 0, certificate.context_factory(), interface="127.0.0.1"
    )
    port = await endpoint.listen(Factory.forProtocol(Protocol))
    try:
        der, version = await deferToThread(peer_certificate, port.getHost().port)
    finally:
        await port.stopListening()
    assert fingerprint(der) == certificate.fingerprint
    assert hashlib.sha256(der).hexdigest().upper() == certificate.fingerprint.replace(":", "")
    assert version in ("TLSv1.2", "TLSv1.3")
