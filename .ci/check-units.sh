#!/usr/bin/env bash
# Gate for the systemd units in systemd/: `systemd-analyze verify` must print nothing and
# exit 0 (it exits 0 on unknown keys and only complains on stderr, hence "any output
# fails"), and `systemd-analyze security --offline=true` must rate each unit's exposure
# at 1.5 or better.
#
# Usage: .ci/check-units.sh BINARY     (e.g. target/release/entra-here-sync)
#
# verify checks that every Exec*= binary exists, so ExecStart= is rewritten to BINARY's
# absolute path in a temporary copy; the template is checked as instance
# entra-here-sync@acme.service.
set -euo pipefail

THRESHOLD=15 # exposure x 10, as systemd-analyze's --threshold expects

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi
if [[ ! -x "$1" ]]; then
    echo "$0: $1 is not an executable file (build it first)" >&2
    exit 2
fi
binary="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
units_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../systemd" && pwd)"

apt_install() {
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    fi
}

# On Debian bookworm systemd-analyze ships in the systemd package; ExecReload= uses
# /bin/kill (procps), which verify also requires to exist.
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[[ -x /bin/kill ]] || missing+=(procps)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing: ${missing[*]}"
    apt_install "${missing[@]}" >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=0

# check UNIT_FILE NAME: NAME is the unit (or instance) name the copy is checked under.
check() {
    local src="$1" name="$2"
    local copy="$work/$name"
    # Rewrite only the program of ExecStart=, keep its arguments.
    sed -E "s|^ExecStart=[^ ]+|ExecStart=${binary//|/\\|}|" "$src" >"$copy"
    if ! grep -qF "ExecStart=${binary} " "$copy"; then
        echo "FAIL $name: no ExecStart= line to rewrite in $src" >&2
        failed=1
        return
    fi

    local out rc=0
    out="$(cd "$work" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$copy" 2>&1)" || rc=$?
    if [[ $rc -ne 0 || -n "$out" ]]; then
        echo "FAIL $name: systemd-analyze verify (exit $rc):" >&2
        printf '%s\n' "$out" >&2
        failed=1
        return
    fi

    local sec score
    rc=0
    sec="$(SYSTEMD_LOG_COLOR=0 systemd-analyze security --offline=true --no-pager \
        --threshold="$THRESHOLD" "$copy" 2>&1)" || rc=$?
    score="$(printf '%s\n' "$sec" | sed -nE 's/.*Overall exposure level for .*: ([0-9.]+).*/\1/p' | tail -n1)"
    if [[ $rc -ne 0 ]]; then
        printf '%s\n' "$sec" | grep -E '^✗' >&2 || true
        echo "FAIL $name: exposure ${score:-unknown} is above $((THRESHOLD / 10)).$((THRESHOLD % 10)) (systemd-analyze security exit $rc)" >&2
        failed=1
        return
    fi
    echo "ok   $name: verify clean, exposure ${score:-unknown}"
}

check "$units_dir/entra-here-sync.service" entra-here-sync.service
check "$units_dir/entra-here-sync@.service" entra-here-sync@acme.service

exit "$failed"
