"""
Test data for the Secure Boot pieces, made here: minimal EFI programs (PE32+) with a
shim's C{.vendor_cert} section or a GRUB's C{mods} section, signed with C{sbsign} by
self-signed test certificates; FAT images made with C{mkfs.fat} and C{mcopy}; Debian
packages made with C{dpkg-deb}. And the real signed files of Debian's C{shim-signed}
and C{grub-efi-amd64-signed}.
"""

from __future__ import annotations

import datetime
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEBIAN_SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
DEBIAN_GRUBNET = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
DEBIAN_GRUB_CD = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
SECTION_ALIGNMENT = 0x1000
FILE_ALIGNMENT = 0x200


def need(*tools: str) -> None:
    """
    Fail (not skip) when a tool the test needs is missing: .ci/run installs them.
    """
    packages = {
        "sbsign": "sbsigntool",
        "mkfs.fat": "dosfstools",
        "mcopy": "mtools",
        "mmd": "mtools",
        "dpkg-deb": "dpkg",
        "xorriso": "xorriso",
    }
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian package {packages[tool]}; .ci/run)")


def need_debian_files() -> None:
    for path in (DEBIAN_SHIM, DEBIAN_GRUBNET, DEBIAN_GRUB_CD):
        if not path.exists():
            pytest.fail(f"{path} is missing (shim-signed, grub-efi-amd64-signed; .ci/run)")


@frozen
class Key:
    """
    A test certificate and its key, as PEM files for sbsign.
    """

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_pem: Path
    key_pem: Path


def make_key(
    directory: Path, common_name: str, issuer: Key | None = None, organisation: str | None = None
) -> Key:
    """
    A certificate for C{common_name}: self-signed (a CA) without C{issuer}.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    stem = directory / common_name.replace(" ", "-")
    cert_pem = stem.with_suffix(".crt")
    key_pem = stem.with_suffix(".key")
    cert_pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return Key(certificate, key, cert_pem, key_pem)


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def make_pe(sections: list[tuple[str, bytes]]) -> bytes:
    """
    A minimal x86-64 EFI application (PE32+) with C{sections}; names longer than 8
    bytes go into the COFF string table, as the linker writes C{.vendor_cert}.
    """
    sections = [(".text", b"\xc3" * 16), *sections]
    pe_at = 0x80
    optional_size = 112 + 16 * 8
    headers = _align(pe_at + 24 + optional_size + 40 * len(sections), FILE_ALIGNMENT)
    strings = bytearray(b"\0\0\0\0")
    table = bytearray()
    body = bytearray()
    address = SECTION_ALIGNMENT
    for name, data in sections:
        raw_name = name.encode()
        if len(raw_name) > 8:
            raw_name = f"/{len(strings)}".encode()
            strings += name.encode() + b"\0"
        raw_size = _align(len(data), FILE_ALIGNMENT)
        table += struct.pack(
            "<8sIIIIIIHHI",
            raw_name,
            len(data),
            address,
            raw_size,
            headers + len(body),
            0,
            0,
            0,
            0,
            0x40000040,
        )
        body += data.ljust(raw_size, b"\0")
        address += _align(len(data), SECTION_ALIGNMENT)
    struct.pack_into("<I", strings, 0, len(strings))
    symbols = headers + len(body) if len(strings) > 4 else 0
    dos = bytearray(pe_at)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, pe_at)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, len(sections), 0, symbols, 0, 0xF0, 0x22)
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B,
        2,
        0,
        16,
        len(body),
        0,
        SECTION_ALIGNMENT,
        SECTION_ALIGNMENT,
        0,
        SECTION_ALIGNMENT,
        FILE_ALIGNMENT,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        address,
        headers,
        0,
        10,
        0,
        0,
        0,
        0,
        0,
        0,
        16,
    )
    directories = b"\0" * (16 * 8)
    head = bytes(dos) + coff + optional + directories + bytes(table)
    image = head.ljust(headers, b"\0") + bytes(body)
    return image + (bytes(strings) if symbols else b"")


def vendor_cert_section(certificate: x509.Certificate) -> bytes:
    """
    Shim's C{.vendor_cert}: sizes and offsets of the trusted and the denied
    certificates, then the trusted one (DER).
    """
    der = certificate.public_bytes(serialization.Encoding.DER)
    return struct.pack("<IIII", len(der), 0, 16, 16 + len(der)) + der


def _elf_module(name: str) -> bytes:
    """
    A relocatable ELF object that names itself in a C{.modname} section, as GRUB's
    modules do.
    """
    modname = name.encode() + b"\0"
    shstrtab = b"\0.modname\0.shstrtab\0"
    data_at = 64
    strtab_at = data_at + len(modname)
    table_at = _align(strtab_at + len(shstrtab), 8)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, table_at, 0, 64, 0, 0, 64, 3, 2)
    sections = b"\0" * 64
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, data_at, len(modname), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, strtab_at, len(shstrtab), 0, 0, 1, 0)
    body = (header + modname + shstrtab).ljust(table_at, b"\0")
    return body + sections


def grub_mods_section(modules: list[str]) -> bytes:
    """
    GRUB's C{mods} section: the module list header (C{mimg}), then each module.
    """
    parts = b""
    for name in modules:
        elf = _elf_module(name)
        parts += struct.pack("<II", 0, 8 + len(elf)) + elf
    return struct.pack("<IIQQ", 0x676D696D, 0, 24, 24 + len(parts)) + parts


def sign(data: bytes, key: Key, directory: Path, name: str) -> bytes:
    """
    C{data} signed with C{key} by C{sbsign}.
    """
    need("sbsign")
    unsigned = directory / f"{name}.unsigned"
    signed = directory / f"{name}.signed"
    unsigned.write_bytes(data)
    subprocess.run(
        [
            "sbsign",
            "--key",
            str(key.key_pem),
            "--cert",
            str(key.cert_pem),
            "--output",
            str(signed),
            str(unsigned),
        ],
        check=True,
        capture_output=True,
    )
    return signed.read_bytes()


def fat_image(directory: Path, files: dict[str, bytes], bits: int = 12) -> bytes:
    """
    A FAT image made by mkfs.fat and mcopy holding C{files} (paths like
    C{EFI/BOOT/BOOTX64.EFI}).
    """
    need("mkfs.fat", "mcopy", "mmd")
    image = directory / f"efi-{bits}.img"
    image.unlink(missing_ok=True)
    payload = sum(len(d) for d in files.values())
    kib = {12: max(1440, payload // 1024 + 512), 16: max(20000, payload // 1024 + 4096)}.get(
        bits, 40000
    )
    cluster = ["-s", "1"] if bits == 32 else []
    subprocess.run(
        ["mkfs.fat", "-C", "-F", str(bits), *cluster, str(image), str(kib)],
        check=True,
        capture_output=True,
    )
    made: set[str] = set()
    for path, data in sorted(files.items()):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                subprocess.run(
                    ["mmd", "-i", str(image), f"::/{folder}"], check=True, capture_output=True
                )
                made.add(folder)
        source = directory / "fat-source"
        source.write_bytes(data)
        subprocess.run(
            ["mcopy", "-i", str(image), str(source), f"::/{path}"], check=True, capture_output=True
        )
    return image.read_bytes()


def make_deb(directory: Path, name: str, files: dict[str, bytes], compression: str = "xz") -> Path:
    """
    A Debian package C{name} holding C{files} (paths inside the package), built by
    dpkg-deb with C{compression}.
    """
    need("dpkg-deb")
    root = directory / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\n"
        "Maintainer: Test <test@example.invalid>\nDescription: test package\n"
    )
    for path, data in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    output = directory / f"{name}_1.0_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(output)],
        check=True,
        capture_output=True,
    )
    return output
