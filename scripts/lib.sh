# Shared by scripts/test, scripts/run-example and .ci/run. POSIX sh.

ROOT=$(cd "$(dirname "$0")/.." && pwd)

say() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

# need_packages PACKAGE...: install the Debian packages that are missing.
need_packages() {
    missing=""
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $package"
        fi
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        say "please install these Debian packages first:$missing"
        exit 1
    fi
    say "installing Debian packages:$missing"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing ||
        { $sudo apt-get update && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; }
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
