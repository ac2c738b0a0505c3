"""
The answer format as data: every key the Proxmox installer reads, its type, the
installer that first accepts it (and its kebab-case and snake_case spellings), and the
checks on its value (L{pxepilot.answers.values}).

The installer parses answers strictly: every table denies unknown fields, so a key
this schema does not know is an error. Which keys a document must hold, and how keys
go together, are the rules (L{pxepilot.answers.rules}).

What each key is comes from the installer's source, release by release: the answer
structs of C{proxmox-auto-installer/src/answer.rs} up to 9.1.7 (types of
C{proxmox-installer-common/src/options.rs} and C{utils.rs}), from 9.2.0 those of
C{proxmox-installer-types/src/answer.rs} (C{proxmox/proxmox-rs}), built with its
C{legacy} feature, which keeps the snake_case aliases. The comments below record, for
each table and key, its Rust type, its serde attributes (rename, alias, default) and the
release that introduced or changed it.
"""

from __future__ import annotations

from attrs import field, frozen

from pxepilot.answers import values
from pxepilot.answers.locales import KEYBOARDS
from pxepilot.answers.values import Check, every
from pxepilot.answers.versions import OLDEST, Gates, InstallerVersion, V


@frozen
class Key:
    """
    One key of the answer format.

    @ivar name: Its kebab-case name.
    @ivar kind: The TOML type: string, bool, int, number, strings (an array of
        strings), table (free-form, such as udev filters), section (a table of known
        keys) or any.
    @ivar since: The first installer that accepts it.
    @ivar kebab_from: The first installer that accepts the kebab-case spelling; before
        it, only snake_case (8.2 and 8.3 spelled multi-word keys with underscores).
    @ivar snake: Whether the snake_case spelling is accepted (from C{snake_from} on;
        deprecated once kebab-case is accepted).
    @ivar snake_from: The first installer with the snake_case spelling, when later than
        C{since} (an alias added to a key born in kebab-case).
    @ivar values: The allowed values of a string.
    @ivar check: Further rules on the value; returns what is wrong.
    @ivar keys: The keys of a section.
    """

    name: str
    kind: str
    since: InstallerVersion = OLDEST
    kebab_from: InstallerVersion | None = None
    snake: bool = False
    snake_from: InstallerVersion | None = None
    values: frozenset[str] | None = None
    check: Check | None = None
    keys: tuple[Key, ...] = field(default=())

    @property
    def snake_name(self) -> str:
        return self.name.replace("-", "_")

    def spellings(self, version: InstallerVersion) -> dict[str, str]:
        """
        The spellings C{version} accepts: name → C{canonical} or C{deprecated}.
        """
        if version < self.since:
            return {}
        if "-" not in self.name:
            return {self.name: "canonical"}
        kebab = version >= (self.kebab_from or self.since)
        found: dict[str, str] = {}
        if kebab:
            found[self.name] = "canonical"
        if self.snake and version >= (self.snake_from or self.since):
            found[self.snake_name] = "deprecated" if kebab else "canonical"
        return found

    def child(self, name: str) -> Key | None:
        for key in self.keys:
            if name in (key.name, key.snake_name):
                return key
        return None

    def changes(self) -> set[InstallerVersion]:
        """
        The releases at which this key, or one of its keys, came or was spelled anew.
        """
        found = {v for v in (self.since, self.kebab_from, self.snake_from) if v is not None}
        for key in self.keys:
            found |= key.changes()
        return found


def _words(*words: str) -> frozenset[str]:
    return frozenset(words)


def _snake(
    name: str,
    kind: str,
    since: InstallerVersion = OLDEST,
    check: Check | None = None,
    allowed: frozenset[str] | None = None,
) -> Key:
    """
    A multi-word key of 8.2: snake_case only up to 8.3.x; from 8.4.0 rename_all
    "kebab-case" with the snake_case name as a serde alias.
    """
    return Key(name, kind, since, Gates.KEBAB_CASE, snake=True, values=allowed, check=check)


_FILTER = Key("filter", "table", check=values.globs)

SCHEMA = Key(
    "",
    "section",
    keys=(
        # Answer (9.2 AutoInstallerConfig): rename_all "kebab-case", deny_unknown_fields;
        # global, network and disk-setup have no default, so are required.
        Key(
            "global",
            "section",
            # Global: no rename_all up to 8.3.x (the Rust names, snake_case), rename_all
            # "kebab-case" with aliases from 8.4.0 (commit e126ee8).
            keys=(
                # KeyboardLayout, rename_all "kebab-case" (8.2.4; a String before, checked
                # against the ISO's keyboard list, which holds the same names).
                Key("keyboard", "string", values=KEYBOARDS),
                # String, in the ISO's country list (utils.rs verify_locale_settings).
                Key("country", "string", check=values.country),
                # Fqdn (a string) up to 8.4.2; from 8.4.3 FqdnConfig, untagged: a string
                # or {source = "from-dhcp" (the default), domain}.
                Key("fqdn", "any", check=values.fqdn),
                # String; email_validate from 8.2.7.
                Key("mailto", "string", check=values.email),
                # String, in zone.tab or "UTC" (UTC from 8.2.2).
                Key("timezone", "string", check=values.timezone),
                # String, required, up to 8.2.6; Option<String> from 8.2.7 (exactly one
                # of it and its hashed form); at least 8 bytes from 8.4.0. 9.2 keeps
                # its alias root_password without the legacy feature.
                _snake("root-password", "string", check=values.password),
                # Option<String>, 8.2.7 (commit 2ee718a); stored by chpasswd -e as given.
                _snake(
                    "root-password-hashed",
                    "string",
                    since=V("8.2.7"),
                    check=values.hashed,
                ),
                # bool, serde default false.
                _snake("reboot-on-error", "bool"),
                # RebootMode (reboot, power-off; default reboot), 8.4.3 (commit
                # 386c7f8), born kebab-case with the alias reboot_mode.
                Key(
                    "reboot-mode",
                    "string",
                    since=V("8.4.3"),
                    snake=True,
                    values=_words("reboot", "power-off"),
                ),
                # Vec<String>, serde default; 8.2.2 moved it here from [system].
                _snake("root-ssh-keys", "strings", check=values.ssh_keys),
                # Option<String>, 9.2.0 (proxmox-installer-types), alias
                # subscription_key; staged as given, checked only when activated.
                Key(
                    "subscription-key",
                    "string",
                    since=Gates.TYPES_CRATE,
                    snake=True,
                    check=values.subscription_key,
                ),
            ),
        ),
        Key(
            "network",
            "section",
            # NetworkInAnswer up to 9.1 (source with serde default from-dhcp; the
            # others Options, checked in its TryFrom); from 9.2 NetworkConfig, tagged by
            # a required source: FromDhcp (only interface-name-pinning) or FromAnswer.
            keys=(
                Key("source", "string", values=_words("from-dhcp", "from-answer")),
                # CidrAddress (address/prefix) up to 9.1; Cidr (prefix optional) 9.2.
                Key("cidr", "string", check=values.cidr),
                # std::net::IpAddr: no IPv6 zone index.
                Key("dns", "string", check=values.address),
                Key("gateway", "string", check=values.address),
                # Option<BTreeMap<String, String>> up to 9.0.3 (an empty table is set);
                # BTreeMap with serde default from 9.0.4 (an empty table is unset).
                _FILTER,
                # Option<NetworkInterfacePinningOptionsAnswer>, 9.1.0 (commit bb621a8),
                # kebab-case only; enabled: bool (required), mapping: HashMap<String,
                # String> (serde default), checked in the rules.
                Key(
                    "interface-name-pinning",
                    "section",
                    since=Gates.PINNING,
                    keys=(Key("enabled", "bool"), Key("mapping", "table")),
                ),
            ),
        ),
        Key(
            "disk-setup",
            "section",
            # DiskSetup (9.2 the same name); the selection and options are checked in
            # its TryFrom (9.2: disk_selection, filesystem_details).
            keys=(
                # Filesystem, rename_all "lowercase".
                Key("filesystem", "string", values=_words("ext4", "xfs", "zfs", "btrfs")),
                # Vec<String>, serde default (an empty list is unset).
                _snake("disk-list", "strings"),
                _FILTER,
                # FilterMatch, rename_all "lowercase".
                _snake("filter-match", "string", allowed=_words("any", "all")),
                Key(
                    "zfs",
                    "section",
                    keys=(
                        # ZfsRaidLevel; its spellings changed at 8.2.7 and 8.3.3.
                        Key("raid", "string", check=values.ZFS_RAID),
                        # ashift, arc-max (MiB), copies: Option<usize> up to 9.1 (64
                        # bits), Option<u32> from 9.2.
                        Key("ashift", "int", check=every(values.unsigned, values.ashift)),
                        _snake("arc-max", "int", check=every(values.unsigned, values.arc_max)),
                        # ZfsChecksumOption, rename_all "kebab-case".
                        Key("checksum", "string", values=_words("on", "fletcher4", "sha256")),
                        # ZfsCompressOption, rename_all "lowercase".
                        Key(
                            "compress",
                            "string",
                            values=_words("on", "off", "lzjb", "lz4", "zle", "gzip", "zstd"),
                        ),
                        Key("copies", "int", check=every(values.unsigned, values.copies)),
                        # f64, in GiB; a negative one fails partitioning.
                        Key("hdsize", "number", check=values.at_least(0)),
                    ),
                ),
                # LvmOptions: f64 each, in GiB. Install.pm makes volumes of these sizes;
                # a negative one fails there, but for maxvz, which only drops the data
                # volume.
                Key(
                    "lvm",
                    "section",
                    keys=(
                        Key("hdsize", "number", check=values.at_least(0)),
                        Key("swapsize", "number", check=values.at_least(0)),
                        Key("maxroot", "number", check=values.at_least(0)),
                        Key("maxvz", "number", check=values.maxvz),
                        Key("minfree", "number", check=values.at_least(0)),
                    ),
                ),
                Key(
                    "btrfs",
                    "section",
                    keys=(
                        # BtrfsRaidLevel; upper case from 8.3.3.
                        Key("raid", "string", check=values.BTRFS_RAID),
                        Key("hdsize", "number", check=values.at_least(0)),
                        # BtrfsCompressOption, rename_all "lowercase", 8.2.7 (commit
                        # bc85017).
                        Key(
                            "compress",
                            "string",
                            since=V("8.2.7"),
                            values=_words("on", "off", "zlib", "lzo", "zstd"),
                        ),
                    ),
                ),
            ),
        ),
        # PostNotificationHookInfo, 8.2.7 (commits 5d82b25, b53619b): no rename_all up
        # to 8.3.x, rename_all "kebab-case" with aliases from 8.4.0.
        Key(
            "post-installation-webhook",
            "section",
            since=V("8.2.7"),
            keys=(
                Key("url", "string", check=values.url),
                _snake("cert-fingerprint", "string"),
                # Option<String>, 9.2.0, alias auth_token.
                Key("auth-token", "string", since=Gates.TYPES_CRATE, snake=True),
            ),
        ),
        # FirstBootHookInfo, 8.3.0 (commit 6526662): rename_all "kebab-case" from the
        # start; the alias cert_fingerprint came with 8.4.0.
        Key(
            "first-boot",
            "section",
            since=Gates.FIRST_BOOT,
            keys=(
                # FirstBootHookSourceMode, required.
                Key("source", "string", values=_words("from-iso", "from-url")),
                # FirstBootHookServiceOrdering, serde default fully-up.
                Key(
                    "ordering",
                    "string",
                    values=_words("before-network", "network-online", "fully-up"),
                ),
                Key("url", "string", check=values.url),
                Key(
                    "cert-fingerprint",
                    "string",
                    since=Gates.FIRST_BOOT,
                    snake=True,
                    snake_from=Gates.KEBAB_CASE,
                ),
            ),
        ),
    ),
)

# Minimum disks per RAID level: installer-common get_min_disks (checked for a disk
# list when the file is read from 9.0.5; by the low-level installer before).
MIN_DISKS = {
    "raid0": 1,
    "raid1": 2,
    "raid10": 4,
    "raidz-1": 3,
    "raidz-2": 4,
    "raidz-3": 5,
}
