#!/usr/bin/env bash
# The one test command. Installs what the tests need and is missing (as root on Debian:
# dovecot-imapd, gnupg, PostgreSQL, this package with its [test] extra), starts
# PostgreSQL when it does not answer, then runs pytest from the repository root.
#
#   bash tests/run.sh [pytest arguments]     e.g. bash tests/run.sh -x -k imap
#   bash tests/run.sh --install-only         only install and start (used by .ci/run)
#
# Quick and idempotent when everything is there. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

install_only=false
if [[ "${1:-}" == "--install-only" ]]; then
    install_only=true
    shift
fi

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
say() { printf 'tests/run.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }
python_cmd() { echo "${PYTHON:-$(command -v python3 || command -v python || echo python3)}"; }

apt_updated=false
apt_install() {  # apt_install PACKAGE... (tolerates a failing post-install service start)
    is_root || die "missing $*: run as root, or install them: apt-get install $*"
    command -v apt-get >/dev/null || die "missing $* and no apt-get: install them by hand"
    local log
    log="$(mktemp)"
    say "installing $* (apt-get)"
    if ! $apt_updated; then
        apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
        apt_updated=true
    fi
    # Without an init system the post-install (re)start of a service fails; the
    # package itself is installed, which the callers check.
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "$@" \
        </dev/null >>"$log" 2>&1 || say "apt-get reported an error (post-install start?)"
    dpkg --configure -a </dev/null >>"$log" 2>&1 || true
    LAST_APT_LOG="$log"
}

install_system_packages() {
    local need=()
    command -v dovecot >/dev/null || need+=(dovecot-imapd)
    command -v gpg >/dev/null && command -v gpgconf >/dev/null || need+=(gnupg)
    command -v python3 >/dev/null || command -v python >/dev/null || need+=(python3)
    "$(python_cmd)" -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    local fresh_postgres=false
    if ! command -v pg_isready >/dev/null && [[ ! -d /etc/postgresql ]]; then
        need+=(postgresql)
        fresh_postgres=true
    fi
    ((${#need[@]})) || return 0
    apt_install "${need[@]}"
    local missing=()
    for cmd in dovecot gpg gpgconf pg_isready; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if ((${#missing[@]})); then
        cat "$LAST_APT_LOG" >&2
        die "still missing after apt-get: ${missing[*]}"
    fi
    if $fresh_postgres; then
        trust_local_postgres
    fi
    rm -f "$LAST_APT_LOG"
}

trust_local_postgres() {  # a PostgreSQL installed just now: let user postgres in on loopback
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        grep -q '^host all postgres 127.0.0.1/32 trust' "$hba" && continue
        sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
        say "allowed user postgres on 127.0.0.1 without password in $hba"
        local version="${hba#/etc/postgresql/}"
        version="${version%%/*}"
        # A cluster the package already started must re-read pg_hba.conf.
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload </dev/null \
            >/dev/null 2>&1 || true
    done
}

python_deps_present() {  # this checkout installed (editable) with every [test] requirement
    "$(python_cmd)" -P - <<'PY'  # -P: not the build-time *.egg-info in the checkout
import importlib.metadata as md
import json
import pathlib
import re
import sys
import tomllib

root = pathlib.Path.cwd().resolve()
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]


def names(requirements, seen):  # distribution names; our own extras ([test] names them) opened
    for requirement in requirements:
        name, own_extras = re.match(r"([A-Za-z0-9._-]+)(?:\[([^]]*)\])?", requirement).groups()
        if name != project["name"]:
            yield name
            continue
        for extra in (e.strip() for e in (own_extras or "").split(",")):
            if extra and extra not in seen:
                seen.add(extra)
                yield from names(extras[extra], seen)


wanted = [project["name"], *names([*project["dependencies"], f"{project['name']}[test]"], set())]
for name in wanted:
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        sys.exit(1)
    if name == project["name"]:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("url") != root.as_uri() or not direct.get("dir_info", {}).get("editable"):
            sys.exit(1)
PY
}

install_python_deps() {
    python_deps_present && return 0
    local python
    python="$(python_cmd)"
    if "$python" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if os.path.exists(marker) and sys.prefix == sys.base_prefix else 1)'; then
        # Debian's own python3 outside a venv (PEP 668): allowed on throwaway CI machines.
        [[ "${CI:-}" == "true" ]] || die "$python is managed by Debian: activate a venv first"
        export PIP_BREAK_SYSTEM_PACKAGES=1
    fi
    say "installing this package with its [test] extra (pip)"
    "$python" -m pip install -q -e '.[test]' </dev/null
}

start_postgres() {
    command -v pg_isready >/dev/null || { say "no pg_isready: PostgreSQL tests will fail"; return; }
    pg_isready -q -h 127.0.0.1 && return 0
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    if [[ -z "$version" ]] || ! command -v pg_ctlcluster >/dev/null; then
        say "PostgreSQL is not installed as a Debian cluster: PostgreSQL tests will fail"
        return
    fi
    say "starting PostgreSQL $version (pg_ctlcluster)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start </dev/null ||
        say "pg_ctlcluster could not start it (as root it can)"
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 && return 0
        sleep 0.5
    done
    say "PostgreSQL still does not answer on 127.0.0.1:5432: PostgreSQL tests will fail"
}

install_system_packages
install_python_deps
start_postgres
$install_only && exit 0
exec "$(python_cmd)" -m pytest -q "$@"
