# Shared by scripts/test and scripts/run-example. POSIX sh.

ROOT=$(cd "$(dirname "$0")/.." && pwd)

say() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

# need_packages PACKAGE...: make sure these Debian packages are installed. As root the
# missing ones are installed with apt-get; anyone else is shown the command to run and
# the script stops, rather than waiting at a sudo password prompt that scrolls away in
# the output of a long run.
need_packages() {
    missing=""
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $package"
        fi
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages:$missing; install them, then run $(basename "$0") again:"
        printf '    sudo apt-get install --no-install-recommends%s\n' "$missing" >&2
        exit 1
    fi
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine (or container) may have no package lists yet.
    apt-get install -y --no-install-recommends $missing ||
        { apt-get update && apt-get install -y --no-install-recommends $missing; }
}

# ensure_venv DIR: a virtualenv of python3 (3.11 or newer) in DIR.
ensure_venv() {
    venv="$1"
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "python3 3.11 or newer is needed (Debian 12 has it: apt-get install python3)"
        exit 1
    fi
    # Debian's python3 has no ensurepip without python3-venv.
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        need_packages python3-venv
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        python3 -m venv "$venv"
    fi
}

# installed_stamp DIR KIND: whether DIR already holds what setup.cfg, pyproject.toml and
# constraints.txt ask for; remember_stamp records it.
stamp_of() {
    cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | cksum | cut -d' ' -f1
}
installed_stamp() {
    [ "$(cat "$1/.pxe-pilot-$2" 2>/dev/null)" = "$(stamp_of)" ]
}
remember_stamp() {
    stamp_of >"$1/.pxe-pilot-$2"
}
