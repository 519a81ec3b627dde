#!/usr/bin/env bash
# Debian's Prometheus for creditwatch's checks and tests: `promtool` lints and unit-tests the
# alerting rules (deploy/prometheus/), and the integration tests scrape a real worker with
# `prometheus` on a loopback port of their own.
#
#   scripts/prometheus.sh install   apt-get install prometheus if prometheus or promtool is missing
#   scripts/prometheus.sh check     promtool check config + rules, promtool test rules
#
# Debian's package also registers a system Prometheus on :9090 (started by systemd where there
# is one). Nothing here uses or touches it: the tests start their own with a temporary config.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

say() { printf 'prometheus.sh: %s\n' "$*"; }
die() { printf 'prometheus.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

cmd_install() {
    if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
        say "prometheus already installed: $(prometheus --version 2>&1 | head -n1)"
        return 0
    fi
    command -v apt-get >/dev/null || die "prometheus is not installed and apt-get is not available; install Prometheus 2.x (prometheus and promtool on PATH) yourself"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "prometheus is not installed; installing it needs root or sudo"
        sudo=(sudo)
    fi
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    local out
    out=$(mktemp)
    say "installing prometheus with apt-get ..."
    if ! "${apt[@]}" install -y -q --no-install-recommends prometheus >"$out" 2>&1; then
        say "apt-get install failed with the current package lists; running apt-get update and retrying"
        if ! "${apt[@]}" update -q >"$out" 2>&1; then
            cat "$out" >&2
            rm -f "$out"
            die "apt-get update failed"
        fi
        if ! "${apt[@]}" install -y -q --no-install-recommends prometheus >"$out" 2>&1; then
            cat "$out" >&2
            rm -f "$out"
            die "apt-get install prometheus failed"
        fi
    fi
    rm -f "$out"
    command -v prometheus >/dev/null && command -v promtool >/dev/null \
        || die "prometheus installed but prometheus/promtool are not on PATH"
    say "installed: $(prometheus --version 2>&1 | head -n1)"
}

cmd_check() {
    command -v promtool >/dev/null || die "promtool not found: run scripts/prometheus.sh install"
    cd "$REPO_ROOT/deploy/prometheus"
    promtool check config prometheus.yml
    promtool check rules alerts.yml
    promtool test rules alerts_test.yml
}

case ${1:-} in
    install) cmd_install ;;
    check) cmd_check ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
