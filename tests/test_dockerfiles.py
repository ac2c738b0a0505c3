"""
The container images are right by construction: no image is built here, so both
Dockerfiles are parsed and checked against what the repository declares (console
scripts, settings, the twistd plugin, the files a build copies), and every check is
shown to catch a realistic mistake in an edited copy.
"""

from __future__ import annotations

import configparser
import contextlib
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from twisted.scripts._twistd_unix import ServerOptions

from pxepilot.config import SETTINGS
from tests.docs_snippets import snippets

ROOT = Path(__file__).resolve().parent.parent
SERVER = "Dockerfile.server"
BUILDER = "Dockerfile.builder"
SERVER_VOLUMES = ("/answers", "/assets", "/state")
BUILDER_VOLUMES = ("/output",)
SETTING_BY_ENV = {s.env: s for s in SETTINGS}
DEFAULTS = {s.name: s.default for s in SETTINGS}

# --- A small Dockerfile parser -------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """
    One instruction: its keyword, its arguments with continuation lines joined, and the
    line it starts on.
    """

    keyword: str
    text: str
    line: int

    def flags(self) -> tuple[dict[str, str], str]:
        """
        The leading C{--name[=value]} flags (COPY --from, HEALTHCHECK --interval, ...)
        and the rest of the arguments.
        """
        found: dict[str, str] = {}
        rest = self.text
        while match := FLAG.match(rest):
            found[match["name"]] = match["value"] or ""
            rest = rest[match.end() :]
        return found, rest

    def exec_form(self) -> list[str] | None:
        """
        The arguments as a JSON array of strings, or L{None} for the shell form.
        """
        return exec_form(self.flags()[1])

    def words(self) -> list[str]:
        """
        The arguments of VOLUME, EXPOSE and the like, in either form.
        """
        return self.exec_form() or self.flags()[1].split()

    def commands(self) -> list[list[str]]:
        """
        A RUN's simple commands, split at C{&&}, C{||}, C{;} and C{|}.
        """
        return simple_commands(self.flags()[1])


FLAG = re.compile(r"--(?P<name>[a-z-]+)(?:=(?P<value>\S*))?\s+")


def exec_form(text: str) -> list[str] | None:
    # Docker falls back to the shell form when the text is not a JSON array of strings.
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


@dataclass
class Stage:
    """
    A build stage: C{FROM image [AS name]} and what follows it.
    """

    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    # The image as the FROM line writes it, before build arguments are put in.
    written: str = ""

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            values.update(env_pairs(instruction.text))
        return values

    def commands(self) -> list[list[str]]:
        return [c for i in self.all("RUN") for c in i.commands()]

    def volumes(self) -> set[str]:
        return {path for i in self.all("VOLUME") for path in i.words()}

    def exposed(self) -> set[str]:
        return {p if "/" in p else f"{p}/tcp" for i in self.all("EXPOSE") for p in i.words()}

    def entry(self) -> list[str] | None:
        """
        What the container runs: ENTRYPOINT and CMD in exec form, or L{None} when either
        is in shell form (then C{/bin/sh} is PID 1 and no signal reaches the program).
        """
        entrypoint, cmd = self.last("ENTRYPOINT"), self.last("CMD")
        argv: list[str] = []
        for instruction in (entrypoint, cmd):
            if instruction is not None:
                form = instruction.exec_form()
                if form is None:
                    return None
                argv += form
        return argv


@dataclass
class Dockerfile:
    stages: list[Stage]
    comments: list[str]
    # The ARGs before the first FROM, with their defaults: the only ones a FROM can use.
    arguments: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def external_images(self) -> list[str]:
        """
        The images the stages start from, other than earlier stages, each once.
        """
        names: set[str] = set()
        images: dict[str, None] = {}
        for stage in self.stages:
            if stage.image not in names:
                images[stage.image] = None
            if stage.name:
                names.add(stage.name)
        return list(images)


def parse_dockerfile(text: str) -> Dockerfile:
    """
    Parse Dockerfile text: comments (also between continuation lines), backslash line
    continuations, blank lines, ARGs before the first FROM, and stages, their images with
    the ARGs' defaults put in. Only the default escape character is known.
    """
    stages: list[Stage] = []
    comments: list[str] = []
    arguments: dict[str, str] = {}
    pending: list[str] = []
    start = 0

    def emit(joined: str) -> None:
        keyword, _, rest = joined.strip().partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), start)
        if instruction.keyword == "FROM":
            words = instruction.flags()[1].split()
            as_name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            image = ARGUMENT.sub(lambda m: arguments.get(m[1] or m[2], m[0]), words[0])
            stages.append(Stage(image, as_name, written=words[0]))
        elif instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.text.partition("=")
            arguments[name.strip()] = default.strip()
        elif not stages:
            raise ValueError(f"line {start}: {instruction.keyword} before FROM")
        else:
            stages[-1].instructions.append(instruction)

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            if re.match(r"#\s*escape\s*=", line) and not stages:
                raise ValueError("only the default escape character is supported")
            comments.append(line[1:].strip())
            continue
        if not line:
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        emit(" ".join([*pending, line]))
        pending = []
    if pending:
        emit(" ".join(pending))
    return Dockerfile(stages, comments, arguments)


ARGUMENT = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def env_pairs(text: str) -> dict[str, str]:
    tokens = shlex.split(text)
    if tokens and "=" not in tokens[0]:
        # The legacy form: ENV NAME value with spaces
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.split("=", 1) for t in tokens)


# Words that start or end a compound command: what follows them is the command itself.
SHELL_KEYWORDS = frozenset(
    {"if", "then", "elif", "else", "fi", "while", "until", "do", "done", "!"}
)


def simple_commands(script: str) -> list[list[str]]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        elif token in SHELL_KEYWORDS and not commands[-1]:
            continue
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def option_value(command: list[str], *names: str) -> str | None:
    for i, token in enumerate(command):
        for name in names:
            if token == name and i + 1 < len(command):
                return command[i + 1]
            if name.startswith("--") and token.startswith(name + "="):
                return token.split("=", 1)[1]
    return None


def accounts(stage: Stage) -> tuple[dict[str, str], dict[str, str]]:
    """
    The users and groups the stage creates: name to numeric id (or the name itself when
    the id is left to the system).
    """
    users: dict[str, str] = {}
    groups: dict[str, str] = {}
    for command in stage.commands():
        if command[0] == "useradd":
            users[command[-1]] = option_value(command, "--uid", "-u") or command[-1]
        elif command[0] == "groupadd":
            groups[command[-1]] = option_value(command, "--gid", "-g") or command[-1]
    return users, groups


def is_created(who: str, created: dict[str, str]) -> bool:
    return who not in ("", "0", "root") and (who in created or who in created.values())


def load(path: Path) -> Dockerfile:
    return parse_dockerfile(path.read_text())


def console_scripts(root: Path = ROOT) -> dict[str, str]:
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    scripts = {}
    for line in setup["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


# --- Checks: each returns what is wrong, an empty list when nothing is -----------------

EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+(?:[-.][\w.-]+)?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_pinned(df: Dockerfile) -> list[str]:
    problems = []
    for image in df.external_images():
        reference, _, digest = image.partition("@")
        last = reference.rsplit("/", 1)[-1]  # a registry may have a port
        tag = last.rpartition(":")[2] if ":" in last else ""
        if "$" in image:
            problems.append(f"{image}: a build argument decides the base")
        elif not EXACT_VERSION.fullmatch(tag):
            problems.append(f"{image}: not pinned to an exact version tag (X.Y.Z...)")
        if digest and not DIGEST.fullmatch(digest):
            problems.append(f"{image}: {digest} is not a sha256 digest")
    return problems


def check_same_base(files: list[Dockerfile]) -> list[str]:
    bases = {image for df in files for image in df.external_images()}
    return [] if len(bases) == 1 else [f"more than one base image: {sorted(bases)}"]


def check_base_argument(df: Dockerfile) -> list[str]:
    """
    Every stage that does not start from an earlier one starts from C{${BASE}}, an ARG
    with the pinned image as its default: C{--build-arg BASE=...} then swaps the base of
    the whole build (scripts/build-images --local-base does).
    """
    problems = []
    if not df.arguments.get("BASE"):
        problems.append("no ARG BASE with a default before the first FROM")
    earlier: set[str] = set()
    for stage in df.stages:
        if stage.written not in earlier and stage.written not in ("${BASE}", "$BASE"):
            problems.append(f"FROM {stage.written}: not the BASE argument")
        if stage.name:
            earlier.add(stage.name)
    return problems


def check_multi_stage(df: Dockerfile) -> list[str]:
    problems = []
    earlier = {s.name for s in df.stages[:-1] if s.name}
    copies = [i.flags()[0].get("from") for i in df.final.all("COPY")]
    if not earlier or not any(c in earlier for c in copies):
        problems.append("the final stage copies nothing from a build stage")
    for stage in df.stages:
        for command in stage.commands():
            pip = pip_subcommand(command)
            if pip in ("install", "wheel", "download"):
                if stage is df.final:
                    problems.append(f"the final stage runs pip {pip}: {shlex.join(command)}")
                if option_value(command, "--constraint", "-c") != "constraints.txt":
                    problems.append(f"pip {pip} without --constraint constraints.txt")
    return problems


PIP_COMMANDS = ("install", "wheel", "download", "uninstall", "list", "show", "freeze")


def pip_subcommand(command: list[str]) -> str | None:
    if command[0] in ("pip", "pip3") or command[:3] in (
        ["python", "-m", "pip"],
        ["python3", "-m", "pip"],
    ):
        return next((t for t in command if t in PIP_COMMANDS), None)
    return None


COMPILERS = re.compile(r"(?<![\w-])(gcc|g\+\+|cc|clang|build-essential|make|rustc|cargo)(?![\w-])")


def check_no_compilers(df: Dockerfile) -> list[str]:
    problems = []
    for instruction in df.final.all("RUN"):
        if match := COMPILERS.search(instruction.text):
            problems.append(f"line {instruction.line}: {match[0]} in the final stage")
    for command in df.final.commands():
        if command[:2] == ["apt-get", "install"]:
            packages = [t.split("=")[0] for t in command[2:] if not t.startswith("-")]
            problems += [
                f"{p} (a -dev package) in the final stage" for p in packages if p.endswith("-dev")
            ]
    return problems


def check_apt(df: Dockerfile) -> list[str]:
    problems = []
    for instruction in df.final.all("RUN"):
        commands = instruction.commands()
        for command in commands:
            if command[:2] == ["apt-get", "install"] and "--no-install-recommends" not in command:
                problems.append(f"line {instruction.line}: apt-get install pulls recommends")
        if any(c[:2] == ["apt-get", "update"] for c in commands) and not any(
            c[:2] == ["rm", "-rf"] and "/var/lib/apt/lists/*" in c for c in commands
        ):
            problems.append(f"line {instruction.line}: the apt lists stay in the layer")
    return problems


def check_offline_ready(df: Dockerfile) -> list[str]:
    """
    Given a base that holds Debian's iPXE binaries and the wheels in wheelhouse/ (as
    scripts/build-images provides them), the build reaches no package index: pip installs
    from the wheelhouse when there is one, and apt-get runs only when the binaries are
    missing.
    """
    problems = []
    for stage in df.stages:
        copies_wheelhouse = any(
            source.startswith("wheelhouse") for i in stage.all("COPY") for source in i.words()[:-1]
        )
        for instruction in stage.all("RUN"):
            offline = guarded = False
            for command in instruction.commands():
                if command[0] == "export" and "PIP_NO_INDEX=1" in command:
                    offline = any(w.startswith("PIP_FIND_LINKS=") for w in command)
                if command[:3] == ["[", "!", "-e"] and command[3].startswith("/usr/lib/ipxe/"):
                    guarded = True
                pip = pip_subcommand(command)
                if pip in ("install", "wheel", "download") and "--no-index" not in command:
                    if not offline:
                        problems.append(f"line {instruction.line}: pip {pip} ignores a wheelhouse")
                    if not copies_wheelhouse:
                        problems.append(f"line {instruction.line}: no wheelhouse in the stage")
                if command[:2] == ["apt-get", "update"] and not guarded:
                    problems.append(
                        f"line {instruction.line}: apt-get runs although the base has iPXE"
                    )
    return problems


PRIVILEGED = re.compile(r"--privileged|SYS_ADMIN|\blosetup\b|\bu?mount\b|/dev/loop")


def check_unprivileged(df: Dockerfile) -> list[str]:
    texts = [i.text for s in df.stages for i in s.instructions] + df.comments
    return [f"needs privileges: {t}" for t in texts if PRIVILEGED.search(t)]


def check_volumes(df: Dockerfile, expected: tuple[str, ...]) -> list[str]:
    missing = set(expected) - df.final.volumes()
    return [f"no VOLUME {v}" for v in sorted(missing)]


def check_writable(df: Dockerfile, path: str) -> list[str]:
    """
    C{path} is made the unprivileged user's, before VOLUME (later changes to a volume
    path are lost).
    """
    users, _ = accounts(df.final)
    for instruction in df.final.instructions:
        if instruction.keyword == "VOLUME" and path in instruction.words():
            return [f"{path} is not given to an unprivileged user before VOLUME"]
        if instruction.keyword == "RUN":
            for command in instruction.commands():
                operands = [t for t in command[1:] if not t.startswith("-")]
                if (
                    command[0] == "chown"
                    and path in operands[1:]
                    and is_created(operands[0].split(":")[0], users)
                ):
                    return []
    return [f"{path} is not given to an unprivileged user"]


def check_dockerignore(root: Path) -> list[str]:
    rules = dockerignore_rules((root / ".dockerignore").read_text())
    generated = (
        ".venv/bin/python",
        ".git/HEAD",
        "state/pxe-pilot.sqlite3",
        "build/lib/pxepilot/config.py",
        "dist/pxe_pilot-0.1.0-py3-none-any.whl",
        "pxe_pilot.egg-info/PKG-INFO",
        "tests/test_config.py",
        ".pytest_cache/README.md",
        ".hypothesis/examples/x",
        ".mypy_cache/3.11/cache.db",
        "assets/proxmox-ve/9.1-1/initrd",
        "pxepilot/__pycache__/config.cpython-311.pyc",
        "twisted/plugins/dropin.cache",
    )
    return [f"{p} is sent to the build" for p in generated if not excluded(p, rules)]


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """
    (excludes, pattern) for each line, in order; the last rule matching a path or one
    of its parent directories decides, as Docker does.
    """
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        if "[" in pattern or "\\" in pattern:
            raise ValueError(f"{pattern}: character classes and escapes are not supported")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        rules.append((not negated, re.compile(regex)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            result = excludes
    return result


def check_copy_sources(df: Dockerfile, root: Path) -> list[str]:
    """
    Every file a COPY takes from the build context exists and is not left out of the
    context by .dockerignore.
    """
    rules = dockerignore_rules((root / ".dockerignore").read_text())
    problems = []
    for stage in df.stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            flags, rest = instruction.flags()
            if "from" in flags:
                continue
            sources = (exec_form(rest) or shlex.split(rest))[:-1]
            for source in sources:
                matches = sorted(root.glob(source))
                # A wildcard may match nothing when another source of the same COPY
                # matches something: Docker copies what there is.
                optional = any(c in source for c in "*?[") and len(sources) > 1
                if not matches and not optional:
                    problems.append(f"line {instruction.line}: {source} does not exist")
                for match in matches:
                    files = [match] if match.is_file() else sorted(match.rglob("*"))
                    for path in files:
                        name = path.relative_to(root).as_posix()
                        generated = "__pycache__" in name or path.name == "dropin.cache"
                        if path.is_file() and not generated and excluded(name, rules):
                            problems.append(f"{name} is left out by .dockerignore")
    return problems


def check_settings_env(df: Dockerfile) -> list[str]:
    """
    Every C{PXE_PILOT_*} variable is a setting, its value one the setting accepts, and
    the directories pxe-pilot reads and writes are volumes.
    """
    problems = []
    volumes = df.final.volumes()
    for name, value in df.final.env().items():
        if not name.startswith("PXE_PILOT_"):
            continue
        setting = SETTING_BY_ENV.get(name)
        if setting is None:
            problems.append(f"{name} is not a pxe-pilot setting")
            continue
        try:
            setting.parse(value)
        except ValueError as e:
            problems.append(f"{name}={value}: {e}")
        if setting.name in ("answers_dir", "assets_dir", "state_dir") and value not in volumes:
            problems.append(f"{name}={value} is not a VOLUME")
    return problems


def setting_value(df: Dockerfile, name: str) -> str:
    setting = next(s for s in SETTINGS if s.name == name)
    return df.final.env().get(setting.env, setting.default)


def check_server_env(df: Dockerfile) -> list[str]:
    env = df.final.env()
    wanted = {
        "PXE_PILOT_ANSWERS_DIR": "/answers",
        "PXE_PILOT_ASSETS_DIR": "/assets",
        "PXE_PILOT_STATE_DIR": "/state",
        "PXE_PILOT_PORT": DEFAULTS["port"],
        "PXE_PILOT_TFTP_ROOT": "/usr/lib/ipxe",
        "PXE_PILOT_BOOT_ENABLED": "true",
    }
    problems = [f"ENV {k}={v} is missing" for k, v in wanted.items() if env.get(k) != v]
    installs = [c for c in df.final.commands() if c[:2] == ["apt-get", "install"]]
    if not any(t.split("=")[0] == "ipxe" for c in installs for t in c):
        problems.append("Debian's ipxe package (the TFTP root) is not installed")
    return problems


def check_expose(df: Dockerfile) -> list[str]:
    exposed = df.final.exposed()
    wanted = [f"{setting_value(df, 'port')}/tcp", f"{setting_value(df, 'tftp_port')}/udp"]
    return [f"{port} is not exposed" for port in wanted if port not in exposed]


def healthcheck_argv(df: Dockerfile) -> list[str] | None:
    """
    The HEALTHCHECK's command, if it is a CMD in exec form.
    """
    instruction = df.final.last("HEALTHCHECK")
    if instruction is None:
        return None
    word, _, command = instruction.flags()[1].partition(" ")
    return exec_form(command.strip()) if word.upper() == "CMD" else None


def check_healthcheck(df: Dockerfile) -> list[str]:
    if df.final.last("HEALTHCHECK") is None:
        return ["no HEALTHCHECK"]
    argv = healthcheck_argv(df)
    if argv is None:
        return ["the HEALTHCHECK is not a CMD in exec form"]
    script = " ".join(argv)
    problems = []
    if argv[0] != "python":
        problems.append(f"the HEALTHCHECK runs {argv[0]}, not the image's python")
    if "/health'" not in script and '/health"' not in script:
        problems.append("the HEALTHCHECK does not request /health")
    if "PXE_PILOT_PORT" not in script or re.search(r":8080\b", script):
        problems.append("the HEALTHCHECK does not take its port from PXE_PILOT_PORT")
    return problems


def check_server_entry(df: Dockerfile) -> list[str]:
    """
    C{twistd} (Twisted's console script) runs the pxe-pilot plugin in the foreground as
    PID 1, and switches to the unprivileged user the image creates.
    """
    argv = df.final.entry()
    if argv is None:
        return ["ENTRYPOINT/CMD in shell form: /bin/sh is PID 1 and swallows SIGTERM"]
    if not argv or argv[0] != "twistd" or not entry_points(group="console_scripts", name="twistd"):
        return [f"the container runs {argv[:1]}, not Twisted's twistd script"]
    known = {o.rstrip("=").replace("-", "_") for o in ServerOptions().longOpt}
    plugins = {command[0] for command in ServerOptions().subCommands}
    problems = []
    options = []
    for word in argv[1:]:
        if not word.startswith("-"):
            if word not in plugins:
                problems.append(f"{word} is not a twistd plugin")
            break
        options.append(word)
        name = word.lstrip("-").split("=")[0].replace("-", "_")
        if word.startswith("--") and name not in known:
            problems.append(f"{word} is not a twistd option")
    else:
        problems.append("twistd is not told to run the pxe-pilot plugin")
    if "--nodaemon" not in options and "-n" not in options:
        problems.append("twistd daemonises and the container exits at once")
    users, groups = accounts(df.final)
    uid = option_value(options, "--uid", "-u")
    gid = option_value(options, "--gid", "-g")
    if uid is None or not is_created(uid, users):
        problems.append(f"twistd does not switch to a user the image creates (--uid={uid})")
    if gid is None or not is_created(gid, groups):
        problems.append(f"twistd does not switch to a group the image creates (--gid={gid})")
    user = df.final.last("USER")
    if user is not None and user.text.split(":")[0] not in ("root", "0"):
        problems.append("USER is set: twistd cannot bind port 69 or switch users")
    return problems


def check_builder_entry(df: Dockerfile) -> list[str]:
    argv = df.final.entry()
    if argv is None:
        return ["ENTRYPOINT/CMD in shell form: /bin/sh is PID 1 and swallows SIGTERM"]
    scripts = console_scripts()
    problems = []
    if not argv or scripts.get(argv[0]) != "builder.cli:main":
        problems.append(f"the container runs {argv[:1]}, not the pxe-pilot-builder script")
    output = option_value(argv, "--output")
    if output not in df.final.volumes():
        problems.append(f"--output {output} is not a VOLUME")
    return problems


def check_builder_user(df: Dockerfile) -> list[str]:
    user = df.final.last("USER")
    users, groups = accounts(df.final)
    if user is None:
        return ["no USER: the builder runs as root"]
    name, _, group = user.text.partition(":")
    problems = []
    if not is_created(name, users):
        problems.append(f"USER {user.text} is root or a user the image does not create")
    if group and not is_created(group, groups):
        problems.append(f"USER {user.text}: the group is root or not created by the image")
    return problems


def docker_commands(markdown: str) -> list[str]:
    """
    The C{docker} command lines in the fenced code blocks, continuation lines joined.
    """
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", markdown, re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.strip().startswith("docker "):
                commands.append(line.strip())
    return commands


def check_docs(markdown: str, base: str, uid: str) -> list[str]:
    commands = docker_commands(markdown)
    problems = []

    def some(description: str, *parts: str) -> None:
        if not any(all(p in c for p in parts) for c in commands):
            problems.append(f"no {description}")

    some("build of the server", "docker build ", "-f Dockerfile.server")
    some("build of the builder", "docker build ", "-f Dockerfile.builder")
    for dockerfile in (SERVER, BUILDER):
        some(
            f"multi-arch push of {dockerfile}",
            "buildx build",
            f"-f {dockerfile}",
            "--platform",
            "--push",
        )
    some(
        "server run with host networking",
        "docker run",
        "--network host",
        "/answers:ro",
        "/assets:ro",
        ":/state",
        "pxe-pilot-server",
    )
    some("builder run as the caller", "docker run", "--user", ":/output", "pxe-pilot-builder")
    for command in commands:
        if PRIVILEGED.search(command) or "--device" in command or "--cap-add SYS" in command:
            problems.append(f"needs privileges: {command}")
        for name in re.findall(r"(?:-e|--env)[ =](PXE_PILOT_[A-Z_]+)", command):
            if name not in SETTING_BY_ENV and name != "PXE_PILOT_URL":
                problems.append(f"{name} is not a pxe-pilot setting")
    if base.split("@")[0] not in markdown:
        problems.append(f"the base image {base.split('@')[0]} is not named")
    if not re.search(rf"\b{uid}\b", markdown):
        problems.append(f"the images' uid, {uid}, is not named")
    return problems


# --- The repository's Dockerfiles pass every check ------------------------------------


@pytest.fixture(scope="module")
def server() -> Dockerfile:
    return load(ROOT / SERVER)


@pytest.fixture(scope="module")
def builder() -> Dockerfile:
    return load(ROOT / BUILDER)


@pytest.mark.parametrize("name", [SERVER, BUILDER])
def test_both_images(name: str) -> None:
    """
    Both images: a pinned base, a build stage whose wheels are installed without build
    tools or pip, locked dependencies, nothing that needs privileges, every file copied
    from the build context present in it.
    """
    df = load(ROOT / name)
    assert len(df.stages) >= 2
    assert check_pinned(df) == []
    assert check_base_argument(df) == []
    assert check_offline_ready(df) == []
    assert check_multi_stage(df) == []
    assert check_no_compilers(df) == []
    assert check_apt(df) == []
    assert check_unprivileged(df) == []
    assert check_copy_sources(df, ROOT) == []
    assert check_settings_env(df) == []


def test_same_base(server: Dockerfile, builder: Dockerfile) -> None:
    """
    Every stage of both images starts from one base image, pinned by tag and digest, in
    the build argument BASE.
    """
    assert check_same_base([server, builder]) == []
    [base] = server.external_images()
    assert DIGEST.fullmatch(base.partition("@")[2])


def test_server(server: Dockerfile) -> None:
    """
    The server runs C{twistd pxe-pilot} as PID 1, binds as root and switches to its own
    user, is configured by PXE_PILOT_* variables, keeps its state in a volume that user
    can write, exposes HTTP and TFTP and checks its health on the configured port.
    """
    assert check_server_entry(server) == []
    assert check_server_env(server) == []
    assert check_volumes(server, SERVER_VOLUMES) == []
    assert check_writable(server, "/state") == []
    assert check_expose(server) == []
    assert check_healthcheck(server) == []


def test_builder(builder: Dockerfile) -> None:
    """
    The builder runs the C{pxe-pilot-builder} console script as an unprivileged user and
    writes to the /output volume, which that user owns.
    """
    assert check_builder_entry(builder) == []
    assert check_builder_user(builder) == []
    assert check_volumes(builder, BUILDER_VOLUMES) == []
    assert check_writable(builder, "/output") == []


def test_build_context() -> None:
    """
    .dockerignore keeps virtualenvs, git, state, build output, caches and assets out of
    the build context.
    """
    assert check_dockerignore(ROOT) == []


def test_docs(server: Dockerfile) -> None:
    """
    docs/containers.md shows how to build, run and publish both images, without
    privileges, with real settings and the base image the Dockerfiles use.
    """
    text = (ROOT / "docs" / "containers.md").read_text()
    assert check_docs(text, server.external_images()[0], server_uid(server)) == []


def server_uid(server: Dockerfile) -> str:
    users, _ = accounts(server.final)
    return users["pxe-pilot"]


# --- The health check, run against a stand-in server ---------------------------------


class HealthStub:
    """
    An HTTP server on a free port of 127.0.0.1: GET /health answers C{status}, anything
    else 404; it records the paths asked for.
    """

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.status = 200
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.paths.append(self.path)
                self.send_response(stub.status if self.path == "/health" else 404)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]


@contextlib.contextmanager
def health_stub() -> Iterator[HealthStub]:
    stub = HealthStub()
    thread = threading.Thread(target=stub.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.httpd.shutdown()
        stub.httpd.server_close()


def run_healthcheck(argv: list[str], **env: str) -> int:
    """
    Run the health check command with this Python in place of the image's, in an
    environment without proxies or pxe-pilot settings other than C{env}.
    """
    clean = {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and not k.startswith("PXE_PILOT_")
    }
    result = subprocess.run(
        [sys.executable, *argv[1:]],
        env={**clean, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode


def check_healthcheck_runs(df: Dockerfile) -> list[str]:
    argv = healthcheck_argv(df)
    if argv is None:
        return ["no HEALTHCHECK CMD to run"]
    with health_stub() as stub:
        code = run_healthcheck(argv, PXE_PILOT_PORT=str(stub.port))
    if code != 0 or stub.paths != ["/health"]:
        return [f"the health check exited {code} after asking for {stub.paths}"]
    return []


def test_healthcheck_runs(server: Dockerfile) -> None:
    """
    The health check asks for GET /health on PXE_PILOT_PORT (on PXE_PILOT_INTERFACE when
    set, never through a proxy from the environment) and fails on 503.
    """
    argv = healthcheck_argv(server)
    assert argv is not None
    assert check_healthcheck_runs(server) == []
    dead_proxy = "http://127.0.0.1:9"
    with health_stub() as stub:
        port = str(stub.port)
        assert run_healthcheck(argv, PXE_PILOT_PORT=port, http_proxy=dead_proxy) == 0
        assert run_healthcheck(argv, PXE_PILOT_PORT=port, HTTP_PROXY=dead_proxy) == 0
        assert run_healthcheck(argv, PXE_PILOT_PORT=port, PXE_PILOT_INTERFACE="127.0.0.1") == 0
        assert run_healthcheck(argv, PXE_PILOT_PORT=port, PXE_PILOT_INTERFACE="all") == 0
        stub.status = 503
        assert run_healthcheck(argv, PXE_PILOT_PORT=port) != 0
    assert stub.paths == ["/health"] * 5


# --- Each check catches a realistic mistake ------------------------------------------

BASE = load(ROOT / SERVER).external_images()[0]
ENTRY = (
    'ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "--uid=pxe-pilot", "--gid=pxe-pilot", '
    '"pxe-pilot"]'
)
HEALTH_PORT = "p = os.environ.get('PXE_PILOT_PORT', '').strip() or '8080'"


def edited(name: str, old: str, new: str, count: int = -1) -> Dockerfile:
    text = (ROOT / name).read_text()
    assert old in text, f"{old!r} is not in {name}: update this test"
    return parse_dockerfile(text.replace(old, new, count))


MISTAKES: list[tuple[str, str, str, str, Callable[[Dockerfile], list[str]]]] = [
    ("latest base", SERVER, BASE, "python:latest", check_pinned),
    ("untagged base", SERVER, BASE, "python", check_pinned),
    ("minor-version base", BUILDER, BASE, "python:3.11-slim-bookworm", check_pinned),
    ("base from an argument", BUILDER, BASE, "python:${PYTHON_VERSION}-slim", check_pinned),
    ("short digest", SERVER, BASE, BASE[: BASE.index("@") + 15], check_pinned),
    (
        "final stage not from the argument",
        SERVER,
        "FROM ${BASE}\n",
        f"FROM {BASE}\n",
        check_base_argument,
    ),
    (
        "build stage not from the argument",
        BUILDER,
        "FROM ${BASE} AS",
        f"FROM {BASE} AS",
        check_base_argument,
    ),
    ("no default base", BUILDER, f"ARG BASE={BASE}", "ARG BASE", check_base_argument),
    (
        "apt-get although iPXE is there",
        SERVER,
        "if [ ! -e /usr/lib/ipxe/undionly.kpxe ]; then",
        "if true; then",
        check_offline_ready,
    ),
    (
        "pip ignores the wheelhouse",
        BUILDER,
        "export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/wheels",
        "true",
        check_offline_ready,
    ),
    (
        "no wheelhouse copied",
        SERVER,
        "COPY constraints.txt wheelhouse* wheels/\n",
        "",
        check_offline_ready,
    ),
    (
        "nothing from the build stage",
        SERVER,
        "COPY --from=build /opt/pxe-pilot /opt/pxe-pilot",
        "COPY . /src",
        check_multi_stage,
    ),
    (
        "unlocked wheels",
        BUILDER,
        "--constraint constraints.txt --wheel-dir",
        "--wheel-dir",
        check_multi_stage,
    ),
    (
        "pip in the final stage",
        SERVER,
        "COPY --from=build /opt/pxe-pilot /opt/pxe-pilot",
        "COPY --from=build /opt/pxe-pilot /opt/pxe-pilot\n"
        "RUN pip install --constraint constraints.txt pxe-pilot",
        check_multi_stage,
    ),
    (
        "a compiler",
        SERVER,
        "--no-install-recommends ipxe",
        "--no-install-recommends gcc ipxe",
        check_no_compilers,
    ),
    (
        "build-essential",
        SERVER,
        "--no-install-recommends ipxe",
        "--no-install-recommends build-essential ipxe",
        check_no_compilers,
    ),
    (
        "a -dev package",
        SERVER,
        "--no-install-recommends ipxe",
        "--no-install-recommends libffi-dev ipxe",
        check_no_compilers,
    ),
    ("recommends", SERVER, "install -y --no-install-recommends", "install -y", check_apt),
    ("apt lists kept", SERVER, " && rm -rf /var/lib/apt/lists/* \\\n", "", check_apt),
    (
        "a loop device",
        BUILDER,
        "USER 10069:10069",
        "RUN losetup --find --show /iso\nUSER 10069:10069",
        check_unprivileged,
    ),
    (
        "privileged in the usage",
        BUILDER,
        "#   docker run --rm",
        "#   docker run --privileged --rm",
        check_unprivileged,
    ),
    (
        "no state volume",
        SERVER,
        '"/assets", "/state"]',
        '"/assets"]',
        lambda df: check_volumes(df, SERVER_VOLUMES),
    ),
    (
        "no output volume",
        BUILDER,
        'VOLUME ["/output"]',
        "",
        lambda df: check_volumes(df, BUILDER_VOLUMES),
    ),
    (
        "state not chowned",
        SERVER,
        " \\\n && chown pxe-pilot:pxe-pilot /state",
        "",
        lambda df: check_writable(df, "/state"),
    ),
    (
        "state chowned to root",
        SERVER,
        "chown pxe-pilot:pxe-pilot /state",
        "chown root:root /state",
        lambda df: check_writable(df, "/state"),
    ),
    (
        "setting misspelt",
        SERVER,
        "PXE_PILOT_STATE_DIR=/state",
        "PXE_PILOT_STATEDIR=/state",
        check_settings_env,
    ),
    (
        "invalid value",
        SERVER,
        "PXE_PILOT_BOOT_ENABLED=true",
        "PXE_PILOT_BOOT_ENABLED=enabled",
        check_settings_env,
    ),
    (
        "state outside the volume",
        SERVER,
        "PXE_PILOT_STATE_DIR=/state",
        "PXE_PILOT_STATE_DIR=/var/lib/pxe-pilot",
        check_settings_env,
    ),
    (
        "boot off",
        SERVER,
        "PXE_PILOT_BOOT_ENABLED=true",
        "PXE_PILOT_BOOT_ENABLED=false",
        check_server_env,
    ),
    (
        "no iPXE package",
        SERVER,
        "--no-install-recommends ipxe=",
        "--no-install-recommends tftp=",
        check_server_env,
    ),
    ("TFTP not exposed", SERVER, "EXPOSE 8080/tcp 69/udp", "EXPOSE 8080/tcp", check_expose),
    ("HTTP port moved", SERVER, "PXE_PILOT_PORT=8080", "PXE_PILOT_PORT=8081", check_expose),
    ("TFTP over TCP", SERVER, "69/udp", "69", check_expose),
    ("no health check", SERVER, "HEALTHCHECK", "# HEALTHCHECK", check_healthcheck),
    ("health check path", SERVER, "/health'", "/healthz'", check_healthcheck),
    ("health check port fixed", SERVER, HEALTH_PORT, "p = '8080'", check_healthcheck),
    ("health check ignores the port", SERVER, "(h, p)", "(h, '9')", check_healthcheck_runs),
    (
        "health check in shell form",
        SERVER,
        'CMD ["python", "-c", ',
        'CMD python -c ["',
        check_healthcheck,
    ),
    (
        "shell form entry point",
        SERVER,
        ENTRY,
        "ENTRYPOINT twistd --nodaemon pxe-pilot",
        check_server_entry,
    ),
    ("daemonising", SERVER, '"--nodaemon", ', "", check_server_entry),
    ("twistd option misspelt", SERVER, '"--nodaemon"', '"--no-daemon"', check_server_entry),
    (
        "plugin misnamed",
        SERVER,
        '"--gid=pxe-pilot", "pxe-pilot"]',
        '"--gid=pxe-pilot", "pxepilot"]',
        check_server_entry,
    ),
    ("no plugin", SERVER, ', "pxe-pilot"]', "]", check_server_entry),
    ("stays root", SERVER, '"--uid=pxe-pilot", ', "", check_server_entry),
    ("switches to root", SERVER, '"--uid=pxe-pilot"', '"--uid=root"', check_server_entry),
    ("user not created", SERVER, '"--uid=pxe-pilot"', '"--uid=nobody"', check_server_entry),
    ("group not created", SERVER, '"--gid=pxe-pilot"', '"--gid=users"', check_server_entry),
    (
        "USER in the server",
        SERVER,
        "COPY --from=build",
        "USER pxe-pilot\nCOPY --from=build",
        check_server_entry,
    ),
    (
        "builder script misnamed",
        BUILDER,
        '["pxe-pilot-builder",',
        '["pxe-pilot-build",',
        check_builder_entry,
    ),
    (
        "operator CLI as builder",
        BUILDER,
        '["pxe-pilot-builder",',
        '["pxe-pilot",',
        check_builder_entry,
    ),
    (
        "output outside the volume",
        BUILDER,
        '"--output", "/output"]',
        '"--output", "/assets"]',
        check_builder_entry,
    ),
    ("builder as root", BUILDER, "USER 10069:10069", "USER root", check_builder_user),
    ("builder as uid 0", BUILDER, "USER 10069:10069", "USER 0:0", check_builder_user),
    ("builder without USER", BUILDER, "USER 10069:10069", "", check_builder_user),
    ("builder in root's group", BUILDER, "USER 10069:10069", "USER 10069:0", check_builder_user),
]


@pytest.mark.parametrize(
    ("name", "old", "new", "check"),
    [pytest.param(f, o, n, c, id=i) for i, f, o, n, c in MISTAKES],
)
def test_mistake_is_caught(
    name: str, old: str, new: str, check: Callable[[Dockerfile], list[str]]
) -> None:
    """
    Each check finds something wrong in a copy with one realistic mistake.
    """
    assert check(edited(name, old, new))


def test_chown_after_volume_is_caught() -> None:
    """
    A volume path given to the user after VOLUME (a change Docker discards) is caught.
    """
    text = (ROOT / BUILDER).read_text()
    text = text.replace(" \\\n && chown pxe-pilot:pxe-pilot /output", "")
    text = text.replace(
        'VOLUME ["/output"]',
        'VOLUME ["/output"]\nUSER root\nRUN chown pxe-pilot:pxe-pilot /output\nUSER 10069:10069',
    )
    assert text.count("chown") == 1
    assert check_writable(parse_dockerfile(text), "/output") == [
        "/output is not given to an unprivileged user before VOLUME"
    ]


def test_base_mismatch_is_caught() -> None:
    """
    A base image bumped in one Dockerfile and not the other is caught.
    """
    bumped = edited(SERVER, BASE, "python:3.12.13-slim-bookworm", count=1)
    assert check_same_base([bumped, load(ROOT / BUILDER)])
    literal = edited(SERVER, "FROM ${BASE}\n", "FROM python:3.12.13-slim-bookworm\n")
    assert check_same_base([literal])


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """
    A copy of what the images are built from, with some generated files beside it.
    """
    for name in ("setup.cfg", "pyproject.toml", "README.md", "constraints.txt", ".dockerignore"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    for package in ("pxepilot", "builder", "twisted/plugins"):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "module.py").write_text("")
    (tmp_path / "pxepilot" / "__pycache__").mkdir()
    (tmp_path / "pxepilot" / "__pycache__" / "module.cpython-311.pyc").write_bytes(b"")
    return tmp_path


def test_build_context_mistakes(context: Path) -> None:
    """
    A COPY source missing from the repository or left out by .dockerignore, and a
    .dockerignore that lets the virtualenv in, are caught.
    """
    server = load(ROOT / SERVER)
    assert check_copy_sources(server, context) == []
    assert check_dockerignore(context) == []

    ignore = context / ".dockerignore"
    ignore.write_text(ignore.read_text().replace("!twisted\n", ""))
    assert check_copy_sources(server, context) == [
        "twisted/plugins/module.py is left out by .dockerignore"
    ]

    (context / "README.md").unlink()
    assert "does not exist" in check_copy_sources(server, context)[0]

    ignore.write_text("tests\n__pycache__\n")
    assert {".venv/bin/python is sent to the build", ".git/HEAD is sent to the build"} <= set(
        check_dockerignore(context)
    )


def test_dockerignore_semantics() -> None:
    """
    The matcher follows Docker's rules: the last matching line wins, a line matches a
    path through its parent directories, C{*} stays within one directory, C{**} spans any.
    """
    rules = dockerignore_rules("*\n!pxepilot\n**/__pycache__\npxepilot/*.tmp\n")
    assert excluded(".venv/bin/python", rules)
    assert not excluded("pxepilot/tftp/server.py", rules)
    assert excluded("pxepilot/tftp/__pycache__/server.cpython-311.pyc", rules)
    assert excluded("pxepilot/a.tmp", rules)
    assert not excluded("pxepilot/tftp/a.tmp", rules)


DOC_MISTAKES = [
    pytest.param("-f Dockerfile.builder", "-f Dockerfile.build", id="builder build"),
    pytest.param("--push", "--load", id="no push"),
    pytest.param("--platform linux/amd64,linux/arm64", "", id="one platform"),
    pytest.param("docker run --rm --user", "docker run --rm --privileged --user", id="privileged"),
    pytest.param("--network host", "-p 8080:8080", id="bridge network"),
    pytest.param("/answers:ro", "/answers", id="answers writable"),
    pytest.param("-e PXE_PILOT_ADMIN_TOKEN", "-e PXE_PILOT_ADMIN_PASSWORD", id="no such setting"),
    pytest.param(BASE.split("@")[0], "python:3.11-slim", id="base not named"),
    pytest.param("10069", "1000", id="uid not named"),
]


@pytest.mark.parametrize(("old", "new"), DOC_MISTAKES)
def test_docs_mistakes(server: Dockerfile, old: str, new: str) -> None:
    """
    Missing build or publish commands, a privileged or bridged run, a setting that does
    not exist, and a base image or uid the Dockerfiles no longer use in
    docs/containers.md are caught.
    """
    text = (ROOT / "docs" / "containers.md").read_text()
    assert old in text
    base = server.external_images()[0]
    assert check_docs(text.replace(old, new), base, server_uid(server))


def test_parser() -> None:
    """
    Continuation lines (with comments and blank lines between them), JSON and shell
    forms, flags and named stages are read as Docker reads them.
    """
    df = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "FROM --platform=$BUILDPLATFORM python:3.11.16-slim AS build\n"
        "RUN a \\\n"
        "# a comment inside\n"
        "\n"
        "  && b 'c && d'\n"
        "FROM build\n"
        "COPY --from=build --chown=1:1 /x /y\n"
        'ENV A=1 B="two words" \\\n'
        "    C=3\n"
        "ENV LEGACY value with spaces\n"
        'CMD ["run", "--flag"]\n'
        "ENTRYPOINT run --flag\n"
        'HEALTHCHECK --interval=5s CMD ["check"]\n'
    )
    assert [(s.image, s.name) for s in df.stages] == [
        ("python:3.11.16-slim", "build"),
        ("build", None),
    ]
    assert df.external_images() == ["python:3.11.16-slim"]
    assert df.comments == ["syntax=docker/dockerfile:1", "a comment inside"]
    assert df.stages[0].commands() == [["a"], ["b", "c && d"]]
    final = df.final
    assert final.all("COPY")[0].flags() == ({"from": "build", "chown": "1:1"}, "/x /y")
    assert final.env() == {"A": "1", "B": "two words", "C": "3", "LEGACY": "value with spaces"}
    assert final.all("CMD")[0].exec_form() == ["run", "--flag"]
    assert final.all("ENTRYPOINT")[0].exec_form() is None
    assert final.entry() is None
    assert final.all("HEALTHCHECK")[0].flags() == ({"interval": "5s"}, 'CMD ["check"]')
    assert final.all("RUN") == []


def test_wheelhouse_reaches_the_build() -> None:
    """
    The wheels scripts/build-images collects are sent to the build, and its copy of them
    in the Dockerfiles is optional: a clone without them builds from PyPI.
    """
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
    assert not excluded("wheelhouse/attrs-26.1.0-py3-none-any.whl", rules)
    copies = [
        i.text
        for df in (load(ROOT / SERVER), load(ROOT / BUILDER))
        for i in df.stages[0].all("COPY")
    ]
    assert "constraints.txt wheelhouse* wheels/" in copies


def test_readme_shows_what_the_container_tests_run() -> None:
    """
    Every command of the README's container section is one that docs/containers.md
    shows for tests/e2e/test_containers.py, which reads and runs them from there.
    """
    tested = "tests/e2e/test_containers.py"

    def commands(document: Path) -> set[str]:
        return {
            line.strip()
            for snippet in snippets((document,))
            if tested in snippet.argument
            for line in re.sub(r"\\\n\s*", " ", snippet.text).splitlines()
            if line.strip()
        }

    shown = commands(ROOT / "README.md")
    assert shown
    assert shown <= commands(ROOT / "docs" / "containers.md")
