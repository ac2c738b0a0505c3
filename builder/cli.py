"""
The C{pxe-pilot-builder} command: a Proxmox ISO in, boot assets out.

    pxe-pilot-builder --iso-url https://.../proxmox-ve_9.1-1.iso \\
        --answer-url https://192.0.2.10:8443/answer --output ./assets
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

import tomli_w
from hyperlink import DecodedURL
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from builder import answer_url
from builder.cdinfo import SAFE_NAME, NotProxmox, ProductInfo
from builder.iso9660 import IsoError
from builder.pin import (
    OPTION,
    Pin,
    answer_server,
    host_port,
    normalise_fingerprint,
    server_pin,
)
from builder.pipeline import BuildError, BuildResult, Pipeline
from builder.progress import Progress
from builder.publish import (
    asset_metadata,
    check_target,
    create_output,
    make_staging,
    publish,
    remove_created,
    target_of,
    write_metadata,
)
from builder.secure_boot import (
    add_to_asset,
    iso_extracts,
    pieces_from_sources,
    pieces_from_staging,
)
from builder.source import download, fetch_expected_digest, read_local
from pxepilot._version import __version__


def _http_url(text: str) -> str:
    try:
        url = DecodedURL.from_text(text)
    except Exception:
        bare_ipv6 = "::" in text and "[" not in text
        hint = (
            " (an IPv6 address goes in brackets: http://[fd00::1]:8080/answer)"
            if bare_ipv6
            else ""
        )
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL{hint}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text


def _fingerprint(text: str) -> str:
    try:
        return normalise_fingerprint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _token(text: str) -> str:
    if not re.fullmatch(r"[!-~]{1,256}", text) or '"' in text or "\\" in text:
        raise argparse.ArgumentTypeError("a token is printable ASCII without spaces or quotes")
    return text


def _name(text: str) -> str:
    if not SAFE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a usable directory name (letters, digits, '.', '_', '+', '-')"
        )
    return text


class _Version(argparse.Action):
    """
    C{--version} prints the program's version. Followed by a value, it is the old
    spelling of C{--version-dir}: kept, with a warning, because a script still using it
    would otherwise print the version and exit 0 without building anything.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values is None:
            sys.stdout.write(f"pxe-pilot-builder {__version__}\n")
            parser.exit(0)
        try:
            setattr(namespace, self.dest, _name(values))
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument --version-dir: {e}")
        sys.stderr.write(
            f"pxe-pilot-builder: warning: --version {values} is the old spelling of "
            f"--version-dir {values}, which replaces it\n"
        )


class _Formatter(argparse.HelpFormatter):
    """
    Shows C{--version} as the flag it now is, not with the value it still accepts.
    """

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if isinstance(action, _Version):
            return ""
        return super()._format_args(action, default_metavar)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _Version):
            return action.option_strings[0]
        return super()._format_action_invocation(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pxe-pilot-builder",
        description=(
            "Turn a Proxmox VE, Backup Server, Mail Gateway or Datacenter Manager ISO into "
            "the boot assets pxe-pilot serves: the ISO prepared to fetch its answer from "
            "ANSWER_URL, the kernel, and the initrd holding the ISO."
        ),
        formatter_class=_Formatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--iso-url",
        type=_http_url,
        metavar="URL",
        help="download the ISO (verified against SHA256SUMS next to it)",
    )
    source.add_argument("--iso", type=Path, metavar="PATH", help="use a local ISO file")
    source.add_argument(
        "--from-pxe-dir",
        type=Path,
        metavar="DIR",
        help="import what proxmox-auto-install-assistant prepare-iso --pxe wrote in DIR "
        "(the answer URL is the one the ISO was prepared with)",
    )
    p.add_argument(
        "--answer-url",
        type=_http_url,
        metavar="URL",
        help="where the installer fetches its answer: pxe-pilot's /answer as the machines "
        "reach it (a loopback, link-local or unspecified host, or another path, is refused "
        "unless --force)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path("assets"),
        metavar="DIR",
        help="assets directory (default: ./assets)",
    )
    p.add_argument(
        "--cert-fingerprint",
        type=_fingerprint,
        metavar="FP",
        help="SHA-256 fingerprint of the answer server's TLS certificate (default for "
        "an https:// answer URL: the certificate the server presents now)",
    )
    p.add_argument(
        "--no-cert-pin",
        action="store_true",
        help="pin nothing: installers trust the answer server by the system's CAs (for a "
        "publicly trusted certificate that is renewed, which a pin would not survive)",
    )
    p.add_argument(
        "--answer-token",
        type=_token,
        metavar="TOKEN",
        help="token the installer sends with its answer request (9.2 and newer)",
    )
    p.add_argument(
        "--product",
        type=_name,
        metavar="NAME",
        help="directory name for the product (default: ISONAME from the ISO)",
    )
    p.add_argument(
        "--version-dir",
        type=_name,
        metavar="NAME",
        help="directory name for the version (default: RELEASE-ISORELEASE)",
    )
    p.add_argument(
        "--layout",
        choices=("combined", "named"),
        default="combined",
        help="combined: one initrd holding the ISO (default; boots with "
        "Debian's iPXE on BIOS and UEFI); named: initrd.img and proxmox.iso",
    )
    p.add_argument(
        "--secure-boot-from",
        type=Path,
        action="append",
        metavar="FILE.deb|DIR",
        help="take the signed shim and network GRUB for Secure Boot from Proxmox's "
        "shim-signed and grub-efi-amd64-signed packages, or a directory holding them "
        "(repeatable; default: those of the ISO's EFI boot image)",
    )
    p.add_argument(
        "--skip-verify", action="store_true", help="do not check the download against SHA256SUMS"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing version; build for an answer URL the check refuses "
        "(with a warning)",
    )
    p.add_argument(
        "--version",
        action=_Version,
        nargs="?",
        dest="version_dir",
        default=argparse.SUPPRESS,
        help="print the program's version and exit",
    )
    return p


def option_pin(args: argparse.Namespace) -> Pin | None:
    """
    The pin C{--cert-fingerprint} gives, if it was given.
    """
    return Pin(args.cert_fingerprint, OPTION) if args.cert_fingerprint else None


def mode_file(args: argparse.Namespace, pin: Pin | None) -> bytes:
    """
    C{/auto-installer-mode.toml}: keys as every installer from 8.2 on reads them.
    """
    http: dict[str, str] = {"url": args.answer_url}
    if pin is not None:
        http["cert_fingerprint"] = pin.fingerprint
    if args.answer_token:
        http["token"] = args.answer_token
    return tomli_w.dumps({"mode": "http", "http": http}).encode()


def source_file(args: argparse.Namespace) -> str | None:
    """
    The ISO's file name, without the directory it was read from or downloaded to.
    """
    if args.iso is not None:
        return str(args.iso.name)
    path = DecodedURL.from_text(args.iso_url).path
    return path[-1] if path and path[-1] else None


def metadata(
    args: argparse.Namespace,
    result: BuildResult,
    verification: str,
    built: datetime.datetime,
    pin: Pin | None = None,
    secure_boot: tuple[dict[str, Any] | None, dict[str, Any]] = (None, {}),
) -> dict[str, Any]:
    """
    The content of C{asset.json}. pxe-pilot serves it to anyone with the assets, so it
    holds no path of the build machine and no secret.

    @param pin: The certificate pinned; by default the one given with
        C{--cert-fingerprint}, if any.
    """
    pin = pin or option_pin(args)
    source = {
        "url": args.iso_url,
        "file": source_file(args),
        "size": result.source_size,
        "sha256": result.source_sha256,
        "verification": verification,
    }
    # The token itself stays out: this file is served to anyone with the assets.
    answer = {
        "url": args.answer_url,
        "cert_fingerprint": pin.fingerprint if pin else None,
        "pinned_from": pin.pinned_from if pin else None,
        "token": bool(args.answer_token),
    }
    files = {
        name: {"size": f.size, "sha256": f.sha256}
        for name, f in result.files.items()
        if not name.startswith(".")
    }
    files.update(secure_boot[1])
    return asset_metadata(
        result.product, result.layout, source, answer, files, built, secure_boot[0]
    )


class _Build:
    """
    One run: the staging directory and pipeline it owns, cleaned up however it ends.
    """

    def __init__(
        self,
        reactor: Any,
        args: argparse.Namespace,
        client: Any,
        progress: Progress,
        threaded: bool,
        now: float | None,
    ) -> None:
        self.reactor = reactor
        self.args = args
        self.client = client
        self.progress = progress
        self.threaded = threaded
        self.now = now
        self.staging: Path | None = None
        self.pipeline: Pipeline | None = None
        self.pin: Pin | None = None
        self.created: list[Path] = []
        self._checked_target = False

    def target(self, info: ProductInfo) -> Path:
        return target_of(
            self.args.output,
            self.args.product or info.iso_name,
            self.args.version_dir or info.version,
        )

    def _watch(self, count: int) -> None:
        self.progress.advance(count)
        pipeline = self.pipeline
        if not self._checked_target and pipeline is not None and pipeline.product is not None:
            # Known as soon as /.cd-info has arrived: no need to download the rest.
            self._checked_target = True
            check_target(self.target(pipeline.product), self.args.force)

    def _pipeline(self, size: int | None) -> Pipeline:
        assert self.staging is not None
        self.pipeline = Pipeline(
            self.staging,
            self.args.layout,
            mode_file(self.args, self.pin),
            size,
            threaded=self.threaded,
            now=self.now,
            extract=iso_extracts,
        )
        return self.pipeline

    async def run(self) -> Path:
        args = self.args
        self._check_answer_url()
        given = pieces_from_sources(args.secure_boot_from or [])
        if args.product and args.version_dir:
            check_target(target_of(args.output, args.product, args.version_dir), args.force)
        # Before anything is created or downloaded: a wrong answer URL fails in seconds
        # and leaves nothing behind.
        self.pin = await self._pin()
        self.created = create_output(args.output)
        self.staging = make_staging(args.output)
        if args.iso is not None:
            result, verification = await self._local(args.iso)
        else:
            result, verification = await self._remote(args.iso_url)
        info = result.product
        target = self.target(info)
        self.progress.step(f"{info.product_name} {info.version}, SHA-256 {result.source_sha256}")
        built = datetime.datetime.fromtimestamp(
            self.now if self.now is not None else self.reactor.seconds(), datetime.UTC
        )
        signed = add_to_asset(
            self.staging, pieces_from_staging(self.staging), given, self.progress.step
        )
        write_metadata(self.staging, metadata(args, result, verification, built, self.pin, signed))
        publish(self.staging, target, args.force)
        self.staging = None
        self.created = []
        self.progress.step(f"published {info.product_name} {info.version} in {target}")
        return target

    def _check_answer_url(self) -> None:
        url = self.args.answer_url
        found = answer_url.problems(url)
        if not found:
            return
        reasons = "; ".join(found)
        if not self.args.force:
            raise BuildError(
                f"the answer URL {url} will not reach pxe-pilot: {reasons}; give pxe-pilot's "
                "/answer as the installed machines reach it, or --force to build anyway"
            )
        self.progress.step(
            f"pxe-pilot-builder: warning: the answer URL {url} may not reach pxe-pilot: "
            f"{reasons}; building anyway (--force)"
        )

    async def _pin(self) -> Pin | None:
        url = self.args.answer_url
        given = option_pin(self.args)
        if given is not None or answer_server(url) is None or self.args.no_cert_pin:
            return given
        pin: Pin
        if self.threaded:
            # A blocking handshake, bounded by its timeout, off the reactor's thread.
            pin = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), server_pin, url
            )
        else:
            pin = server_pin(url)
        self.progress.step(
            f"pinned the certificate of {host_port(url)}: SHA256 {pin.fingerprint}; "
            "installers of this asset accept only that certificate"
        )
        return pin

    async def _local(self, path: Path) -> tuple[BuildResult, str]:
        try:
            size = path.stat().st_size
        except OSError as e:
            raise BuildError(f"cannot read {path}: {e.strerror}") from None
        if not path.is_file():
            raise BuildError(f"{path} is not a file")
        pipeline = self._pipeline(size)
        self.progress.start(f"reading {path}", size)
        if self.threaded:
            await threads.deferToThread(read_local, path, pipeline, self._watch)
        else:
            read_local(path, pipeline, self._watch)
        return await self._finish(pipeline), "local file"

    async def _remote(self, url: str) -> tuple[BuildResult, str]:
        expected = None
        if not self.args.skip_verify:
            expected = await fetch_expected_digest(self.reactor, self.client, url)
            if expected is None:
                self.progress.step("no SHA256SUMS next to the ISO: the download is not verified")
        pipeline = await download(
            self.reactor,
            self.client,
            url,
            self._pipeline,
            self._watch,
            lambda size: self.progress.start(f"downloading {url}", size),
            notice=self.progress.step,
        )
        result = await self._finish(pipeline)
        if expected is not None:
            if result.source_sha256 != expected:
                raise BuildError(
                    f"SHA-256 mismatch for {url}: SHA256SUMS says {expected}, the download is "
                    f"{result.source_sha256}; nothing was kept"
                )
            self.progress.step("verified against SHA256SUMS")
        verification = (
            "skipped"
            if self.args.skip_verify
            else ("SHA256SUMS" if expected else "none available")
        )
        return result, verification

    async def _finish(self, pipeline: Pipeline) -> BuildResult:
        self.progress.step("syncing the assets to disk")
        if self.threaded:
            result: BuildResult = await threads.deferToThread(pipeline.finish)
            return result
        return pipeline.finish()

    def cleanup(self) -> None:
        if self.pipeline is not None:
            self.pipeline.abort()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        remove_created(self.created)
        self.created = []


async def build(
    reactor: Any,
    args: argparse.Namespace,
    client: Any = None,
    stream: TextIO | None = None,
    threaded: bool = True,
    now: float | None = None,
) -> Path:
    """
    Run one build; the published version's directory.

    @raise BuildError: (or L{IsoError}, L{NotProxmox}, L{OSError}) when it fails; nothing
        is left behind in the output directory then.
    """
    if client is None:
        from builder.http_client import download_client

        client = download_client(reactor)
    progress = Progress(stream or sys.stderr, clock=reactor)
    run = _Build(reactor, args, client, progress, threaded, now)
    # Ctrl-C stops the reactor: nothing half-built may stay behind then either. The
    # cleanup is idempotent, so the trigger can stay once the build is over.
    reactor.addSystemEventTrigger("before", "shutdown", run.cleanup)
    try:
        return await run.run()
    finally:
        run.cleanup()


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


# What prepare-iso already decided: the answer settings are baked into its ISO.
_NOT_WITH_PXE_DIR = (
    "answer_url",
    "cert_fingerprint",
    "no_cert_pin",
    "answer_token",
    "skip_verify",
)


def _import_pxe_dir(args: argparse.Namespace) -> int:
    given = [name for name in _NOT_WITH_PXE_DIR if getattr(args, name)]
    if given:
        option = "--" + given[0].replace("_", "-")
        parser().error(f"{option} does not apply to --from-pxe-dir: the prepared ISO decides")
    from builder.from_pxe_dir import import_pxe_dir

    def step(line: str) -> None:
        sys.stderr.write(line + "\n")

    try:
        import_pxe_dir(
            args.from_pxe_dir,
            args.output,
            args.layout,
            step,
            product=args.product,
            version_dir=args.version_dir,
            force=args.force,
            secure_boot_from=args.secure_boot_from or (),
        )
    except (BuildError, NotProxmox, IsoError, OSError) as e:
        sys.stderr.write(f"pxe-pilot-builder: error: {_message(e)}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """
    Run the command: exit 0 when published, 1 after a failure (one line on stderr),
    2 for a usage error, 130 when interrupted.
    """
    args = parser().parse_args(argv)
    if args.no_cert_pin and args.cert_fingerprint:
        parser().error("--no-cert-pin and --cert-fingerprint contradict each other")
    if args.from_pxe_dir is not None:
        sys.exit(_import_pxe_dir(args))
    if args.answer_url is None:
        parser().error("the following arguments are required: --answer-url")
    from twisted.internet import reactor

    codes: list[int] = []

    def succeeded(_: object) -> None:
        codes.append(0)

    def failed(failure: Failure) -> None:
        error = failure.value or Exception("unknown failure")
        if isinstance(error, BuildError | IsoError | NotProxmox | OSError):
            sys.stderr.write(f"pxe-pilot-builder: error: {_message(error)}\n")
        else:
            sys.stderr.write(
                f"pxe-pilot-builder: error: unexpected {type(error).__name__}: {_message(error)}\n"
            )
            failure.printTraceback(file=sys.stderr)
        codes.append(1)

    def start() -> None:
        d = Deferred.fromCoroutine(build(reactor, args))
        d.addCallbacks(succeeded, failed)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    # No outcome: the reactor was stopped by a signal (Ctrl-C) before the build ended.
    sys.exit(codes[0] if codes else 130)
