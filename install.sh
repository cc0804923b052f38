#!/usr/bin/env bash
# install.sh: build stackproof and install it for gdb (and for python3).
#
#   ./install.sh [--prefix DIR] [--no-gdbinit] [--no-pth] [--no-demo]
#   ./install.sh --uninstall [--prefix DIR]
#   ./install.sh --deps-only
#
# Layout under PREFIX (default $HOME/.local):
#   PREFIX/lib/stackproof/stackproof-gdbinit.py        the file gdb sources
#   PREFIX/lib/stackproof/python/stackproof/...         the package
#   PREFIX/lib/stackproof/python/stackproof/_core.abi3.so   the Rust core
#   PREFIX/lib/stackproof/python/stackproof/_core.pyi       its type stub (with py.typed)
#   PREFIX/lib/stackproof/crash/stackproof.so           the crash extension (when crash's
#                                                       defs.h is installed: `extend` it in crash)
# plus one marked `source` line in the init file gdb reads (the one `gdb --help`
# names: $XDG_CONFIG_HOME/gdb/gdbinit or ~/.config/gdb/gdbinit if it exists, else
# ~/.gdbinit) and a stackproof.pth in the user site-packages of python3 (so
# `python3 -m stackproof` works outside gdb).
#
# Needs Rust (cargo) >= the rust-version of Cargo.toml; `pip install .` builds a
# wheel instead (README).
#
# It ends by proving itself on a freshly crashed demo program (--no-demo skips).
set -euo pipefail

PROG=${0##*/}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX="${HOME:-/root}/.local"
DO_GDBINIT=1
DO_PTH=1
DO_DEMO=1
UNINSTALL=0
DEPS_ONLY=0
DO_DEPS=1
PYTHON=${PYTHON:-python3}
GDBINIT_FILE=${STACKPROOF_GDBINIT_FILE:-}
MARKER="# stackproof: added by install.sh (./install.sh --uninstall removes it)"
# The minimum Rust: Cargo.toml's rust-version (the one place it is written).
MSRV=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$REPO/Cargo.toml" 2>/dev/null | head -n1)
MSRV=${MSRV:-1.88}

usage() {
    cat <<EOF
Usage: $PROG [options]

Build stackproof (cargo build --release --features python) and install it.

Options:
  --prefix DIR    install under DIR/lib/stackproof (default: \$HOME/.local)
  --no-gdbinit    do not add the 'source .../stackproof-gdbinit.py' line to gdb's init file
  --no-pth        do not write stackproof.pth into python3's user site-packages
  --no-demo       skip the final self-test on a crashed demo program
  --deps-only     only install what is missing to build and test (gdb, gcc, make,
                  xz-utils, python3, and for the tests g++, pytest and jsonschema), check
                  cargo, then stop (CI runs this; a plain install adds no test tools)
  --no-deps       do not look for / install system packages (cargo must be on PATH)
  --uninstall     remove the installed files, the gdb init file line and the .pth
  -h, --help      this help

Environment: PYTHON (default python3), CARGO_TARGET_DIR, STACKPROOF_GDBINIT_FILE
(default: the user init file gdb reads, as \`gdb --help\` names it; else ~/.gdbinit).
HOME and XDG_CONFIG_HOME choose that file as they do for gdb.

Needs cargo/rustc $MSRV or newer (rustup); without Rust: pip install a wheel (README).

In gdb:  source PREFIX/lib/stackproof/stackproof-gdbinit.py   then   help verify-bt
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --no-gdbinit) DO_GDBINIT=0; shift ;;
        --no-pth) DO_PTH=0; shift ;;
        --no-demo) DO_DEMO=0; shift ;;
        --deps-only) DEPS_ONLY=1; shift ;;
        --no-deps) DO_DEPS=0; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[ -n "$PREFIX" ] || die "empty --prefix"
case "$PREFIX" in /*) ;; *) PREFIX="$PWD/$PREFIX" ;; esac
PREFIX=${PREFIX%/}
DEST="$PREFIX/lib/stackproof"
GDBINIT_PY="$DEST/stackproof-gdbinit.py"
CRASH_DEFS=${CRASH_DEFS:-/usr/include/crash/defs.h}

# ---------------------------------------------------------------- helpers ---

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "missing: $* (no apt-get here: install them with your package manager)"
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        die "missing: $* (not root and no sudo: install them as root)"
    fi
    if [ $APT_UPDATED -eq 0 ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

user_site() {
    "$PYTHON" -c 'import site, sys; sys.stdout.write(site.getusersitepackages())'
}

# "1.95.0" from `cargo 1.95.0 (f2d3ce0bd 2026-03-21)`
cargo_version() { "$1" --version 2>/dev/null | sed -n 's/^cargo \([0-9][0-9.]*\).*/\1/p'; }

# true when version $1 >= version $2 (dotted numbers)
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -t. -k1,1n -k2,2n -k3,3n | head -n1)" = "$2" ]
}

# A cargo new enough for Cargo.lock and the crates: on PATH, else rustup's
# ~/.cargo/bin (put first on PATH). Dies saying what to do.
find_cargo() {
    local c v old=""
    for c in "$(command -v cargo 2>/dev/null || true)" "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo"; do
        [ -n "$c" ] && [ -x "$c" ] || continue
        v=$(cargo_version "$c")
        if [ -n "$v" ] && version_ge "$v" "$MSRV"; then
            PATH="$(dirname "$c"):$PATH"; export PATH
            return 0
        fi
        old="$old $c ($v)"
    done
    if [ -n "$old" ]; then
        die "cargo too old:$old; stackproof needs Rust $MSRV or newer.
Install a current toolchain with rustup (see rustup.rs; then: rustup update stable),
or install a prebuilt stackproof wheel with pip (no Rust needed, see README)."
    fi
    die "cargo not found. stackproof's core is Rust ($MSRV or newer): install a toolchain
with rustup (see rustup.rs; distributions' cargo packages are often older than $MSRV)
and run $PROG again, or install a prebuilt stackproof wheel with pip (see README)."
}

# The user init file gdb reads, as gdb itself names it in `gdb --help`
# ($XDG_CONFIG_HOME/gdb/gdbinit, else ~/.config/gdb/gdbinit, if it exists, else
# ~/.gdbinit); when gdb names none yet, the same order by hand.
gdb_user_init() {
    if [ -n "${STACKPROOF_GDBINIT_FILE:-}" ]; then echo "$STACKPROOF_GDBINIT_FILE"; return; fi
    local f
    f=$(gdb --help 2>/dev/null </dev/null | sed -n 's/^ *\* user-specific init file: //p' | head -n1)
    if [ -n "$f" ]; then echo "$f"; return; fi
    local home=${HOME:-/root}
    if [ -n "${XDG_CONFIG_HOME:-}" ]; then f="$XDG_CONFIG_HOME/gdb/gdbinit"; else f="$home/.config/gdb/gdbinit"; fi
    if [ -f "$f" ]; then echo "$f"; else echo "$home/.gdbinit"; fi
}

# ------------------------------------------------------------------- deps ---

install_deps() {
    local pkgs=()
    command -v gdb >/dev/null 2>&1 || pkgs+=(gdb)
    command -v gcc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
    # the tests' C++ program: a test tool, like pytest
    if [ $DEPS_ONLY -eq 1 ]; then command -v g++ >/dev/null 2>&1 || pkgs+=(g++); fi
    command -v make >/dev/null 2>&1 || pkgs+=(make)
    command -v xz >/dev/null 2>&1 || pkgs+=(xz-utils)
    command -v strip >/dev/null 2>&1 || pkgs+=(binutils)
    command -v "$PYTHON" >/dev/null 2>&1 || pkgs+=(python3)
    # crash and its defs.h (Debian's crash package ships both): the crash extension
    if ! command -v crash >/dev/null 2>&1 || [ ! -f "$CRASH_DEFS" ]; then
        if command -v apt-get >/dev/null 2>&1; then pkgs+=(crash); fi
    fi
    if [ ${#pkgs[@]} -gt 0 ]; then apt_install "${pkgs[@]}"; fi

    # gdb must embed Python (Debian's gdb does; gdb-minimal does not)
    if ! gdb -nx -batch -ex 'python print("py-ok")' 2>/dev/null </dev/null | grep -q py-ok; then
        apt_install gdb
        gdb -nx -batch -ex 'python print("py-ok")' 2>/dev/null </dev/null | grep -q py-ok ||
            die "this gdb has no Python support; install a gdb built with Python"
    fi
    # gcc must be able to link a threaded program
    local t; t=$(mktemp -d)
    printf '#include <pthread.h>\nint main(void){return 0;}\n' >"$t/c.c"
    if ! gcc -o "$t/c" "$t/c.c" -pthread 2>/dev/null; then
        apt_install libc6-dev
    fi
    rm -rf "$t"

    find_cargo
}

# pytest and jsonschema, for the python3 that runs the tests: only for the test
# command and CI (--deps-only), never for a user's install.
install_test_deps() {
    local mod pkg
    for mod in pytest jsonschema; do
        "$PYTHON" -c "import $mod" 2>/dev/null && continue
        local pyprefix
        pyprefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
        if [ "$pyprefix" = /usr ] && command -v apt-get >/dev/null 2>&1; then
            apt_install "python3-$mod"
        else
            say "$PYTHON -m pip install --user $mod"
            "$PYTHON" -m pip install --user -q "$mod" </dev/null ||
                echo "$PROG: warning: could not install $mod for $PYTHON (only the tests need it)" >&2
        fi
    done
}

# -------------------------------------------------------------- uninstall ---

remove_gdbinit_line() {
    local f
    for f in "$@"; do remove_line_from "$f"; done
}

# Every file gdb might read (an install made before the user created another one).
gdbinit_candidates() {
    local home=${HOME:-/root}
    printf '%s\n' "$GDBINIT_FILE" "${XDG_CONFIG_HOME:-$home/.config}/gdb/gdbinit" \
        "$home/.config/gdb/gdbinit" "$home/.gdbinit" | awk '!seen[$0]++'
}

remove_line_from() {
    local GDBINIT_FILE=$1
    [ -f "$GDBINIT_FILE" ] || return 0
    local tmp; tmp=$(mktemp)
    # drop each marker line and the `source .../stackproof-gdbinit.py` after it
    awk -v marker="$MARKER" '
        skip && /^source .*stackproof-gdbinit\.py[ \t]*$/ { skip = 0; next }
        { skip = 0 }
        $0 == marker { skip = 1; next }
        { print }
    ' "$GDBINIT_FILE" >"$tmp"
    if ! cmp -s "$tmp" "$GDBINIT_FILE"; then
        cat "$tmp" >"$GDBINIT_FILE"
        say "removed the stackproof line from $GDBINIT_FILE"
    fi
    rm -f "$tmp"
}

remove_pth() {
    command -v "$PYTHON" >/dev/null 2>&1 || return 0
    local site pth
    site=$(user_site) || return 0
    pth="$site/stackproof.pth"
    if [ -f "$pth" ] && grep -qxF "$DEST/python" "$pth"; then
        rm -f "$pth"
        say "removed $pth"
    fi
}

uninstall() {
    if [ -d "$DEST" ]; then
        if [ -f "$DEST/stackproof-gdbinit.py" ] || [ -d "$DEST/python/stackproof" ]; then
            rm -rf "$DEST"
            say "removed $DEST"
        else
            die "$DEST does not look like a stackproof installation; not removing it"
        fi
    else
        say "nothing installed in $DEST"
    fi
    rmdir "$PREFIX/lib" 2>/dev/null || true
    local files=()
    mapfile -t files < <(gdbinit_candidates)
    remove_gdbinit_line "${files[@]}"
    remove_pth
}

# ---------------------------------------------------------- build/install ---

build() {
    [ -f "$REPO/Cargo.toml" ] || die "no Cargo.toml in $REPO"
    [ -d "$REPO/python/stackproof" ] || die "missing $REPO/python/stackproof (the Python package)"
    [ -f "$REPO/python/stackproof-gdbinit.py" ] || die "missing $REPO/python/stackproof-gdbinit.py"
    say "cargo build --release --features python"
    (cd "$REPO" && cargo build --release --features python)
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    case "$target" in /*) ;; *) target="$REPO/$target" ;; esac
    SO="$target/release/libstackproof.so"
    [ -f "$SO" ] || die "cargo did not produce $SO"
}

# The crash extension: the core as a static library (feature capi) linked with the C
# glue, compiled against the defs.h of the crash on this machine, whose version it records.
build_crash_extension() {
    CRASH_SO=
    if [ ! -f "$CRASH_DEFS" ]; then
        echo "    note: $CRASH_DEFS not found: the crash extension is not built" \
             "(Debian/Ubuntu: apt-get install crash; Fedora/RHEL: crash-devel)"
        return 0
    fi
    local version
    version=$(crash --version 2>/dev/null </dev/null | awk '/^crash /{print $2; exit}')
    if [ -z "$version" ]; then
        echo "    note: no crash binary answers 'crash --version': the crash extension is not built"
        return 0
    fi
    say "cargo rustc --release --lib --features capi --crate-type staticlib (crash $version)"
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    case "$target" in /*) ;; *) target="$REPO/$target" ;; esac
    # Its own target dir: the features differ from the Python build's, both stay built.
    target="$target/capi"
    (cd "$REPO" && cargo rustc --release --lib --features capi --crate-type staticlib --target-dir "$target")
    CRASH_SO="$target/release/stackproof-crash.so"
    gcc -O2 -fPIC -shared -nostartfiles -Wall -Wno-unused -Wno-format-truncation -DX86_64 \
        -DSP_CRASH_VERSION="\"$version\"" -I"$(dirname "$CRASH_DEFS")" \
        -o "$CRASH_SO" "$REPO/crash/stackproof.c" "$target/release/libstackproof.a" \
        -Wl,--gc-sections -Wl,--exclude-libs,ALL -lpthread -ldl -lm ||
        die "building the crash extension failed"
}

install_files() {
    say "installing into $DEST"
    mkdir -p "$DEST/python"
    rm -rf "$DEST/python/stackproof.new"
    cp -R "$REPO/python/stackproof" "$DEST/python/stackproof.new"
    find "$DEST/python/stackproof.new" \( -name __pycache__ -o -name '*.pyc' -o -name '*.so' \) \
        -prune -exec rm -rf {} +
    install -m 0755 "$SO" "$DEST/python/stackproof.new/_core.abi3.so"
    rm -rf "$DEST/python/stackproof"
    mv "$DEST/python/stackproof.new" "$DEST/python/stackproof"
    install -m 0644 "$REPO/python/stackproof-gdbinit.py" "$GDBINIT_PY"
    if [ -n "${CRASH_SO:-}" ]; then
        mkdir -p "$DEST/crash"
        install -m 0755 "$CRASH_SO" "$DEST/crash/stackproof.so"
        say "crash extension: $DEST/crash/stackproof.so"
        echo "    in crash: extend $DEST/crash/stackproof.so   (or that line in ~/.crashrc), then help verify-bt"
    fi
}

add_gdbinit_line() {
    local line="source $GDBINIT_PY"
    if [ -f "$GDBINIT_FILE" ] && grep -qxF "$line" "$GDBINIT_FILE"; then
        say "$GDBINIT_FILE already sources stackproof"
        return 0
    fi
    local files=()
    mapfile -t files < <(gdbinit_candidates)
    remove_gdbinit_line "${files[@]}"   # an older install (another prefix, another init file)
    mkdir -p "$(dirname "$GDBINIT_FILE")"
    touch "$GDBINIT_FILE"
    if [ -s "$GDBINIT_FILE" ] && [ -n "$(tail -c1 "$GDBINIT_FILE")" ]; then
        echo >>"$GDBINIT_FILE"
    fi
    printf '%s\n%s\n' "$MARKER" "$line" >>"$GDBINIT_FILE"
    say "added '$line' to $GDBINIT_FILE"
}

add_pth() {
    local site
    site=$(user_site) || die "cannot ask $PYTHON for its user site-packages"
    mkdir -p "$site"
    printf '%s\n' "$DEST/python" >"$site/stackproof.pth"
    say "wrote $site/stackproof.pth -> $DEST/python"
}

# ------------------------------------------------------------------- demo ---

demo() {
    say "self-test: crash a demo program and check its backtrace"
    local t; t=$(mktemp -d "${TMPDIR:-/tmp}/stackproof-demo.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$t'" EXIT
    cat >"$t/demo.c" <<'EOF'
#include <stddef.h>
#define NOINLINE __attribute__((noinline))
NOINLINE void store(int *p, int v) { *p = v; }
NOINLINE int inner(int *p, int v) { store(p, v); return v + 1; }
NOINLINE int middle(int *p, int v) { int r = inner(p, v * 2); return r + 1; }
NOINLINE int outer(int *p, int v) { int r = middle(p, v + 3); return r + 1; }
int main(void) { return outer(NULL, 1); }
EOF
    gcc -g -O0 -o "$t/demo" "$t/demo.c" || die "demo: gcc failed"
    gdb -batch -nx -ex 'set debuginfod enabled off' -ex run \
        -ex "generate-core-file $t/demo.core" "$t/demo" >"$t/run.log" 2>&1 </dev/null || true
    if [ ! -s "$t/demo.core" ]; then
        cat "$t/run.log" >&2
        die "demo: gdb did not write a core"
    fi
    local status=0 load=()
    if [ $DO_GDBINIT -eq 1 ]; then
        # as a user starts gdb: no -nx, so the init files load stackproof
        load=()
    else
        load=(-nx -ex "source $GDBINIT_PY")
    fi
    gdb -batch "${load[@]}" -ex 'set debuginfod enabled off' \
        -ex 'help verify-bt' -ex 'help regs-from-stack' -ex 'verify-bt' \
        "$t/demo" "$t/demo.core" >"$t/out.log" 2>&1 </dev/null || status=$?
    cat "$t/out.log"
    if grep -q 'Undefined command' "$t/out.log"; then
        if [ $DO_GDBINIT -eq 1 ]; then
            die "demo: gdb does not know the stackproof commands: it did not read $GDBINIT_FILE
(gdb --help names the init files it reads)"
        fi
        die "demo: gdb does not know the stackproof commands after 'source $GDBINIT_PY'"
    fi
    if [ $status -ne 0 ]; then
        die "demo: verify-bt failed (gdb exit status $status)"
    fi
    if grep -qE 'Traceback|PanicException|panicked at|Python Exception|stackproof: not loaded' "$t/out.log"; then
        die "demo: errors in the output above"
    fi
    grep -q -- '--max-frames' "$t/out.log" || die "demo: no help for verify-bt"
    grep -q -- '--layout' "$t/out.log" || die "demo: no help for regs-from-stack"
    grep -q 'outer' "$t/out.log" || die "demo: verify-bt did not show the demo's frames"
    say "self-test passed"
}

# ------------------------------------------------------------------- main ---

if [ $UNINSTALL -eq 1 ]; then
    GDBINIT_FILE=$(gdb_user_init)
    uninstall
    exit 0
fi

if [ $DO_DEPS -eq 1 ] || [ $DEPS_ONLY -eq 1 ]; then
    install_deps
else
    find_cargo
fi
if [ $DEPS_ONLY -eq 1 ]; then
    install_test_deps
    say "dependencies are in place"
    exit 0
fi
GDBINIT_FILE=$(gdb_user_init)
build
build_crash_extension
install_files
if [ $DO_GDBINIT -eq 1 ]; then add_gdbinit_line; fi
if [ $DO_PTH -eq 1 ]; then add_pth; fi
if [ $DO_DEMO -eq 1 ]; then demo; fi
say "installed stackproof in $DEST"
if [ $DO_GDBINIT -eq 0 ]; then
    echo "    in gdb: source $GDBINIT_PY"
fi
