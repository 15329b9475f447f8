#!/bin/sh
# The twinwatch agent on a UniFi OS console (UDM Pro and its kin): install, upgrade, uninstall.
#
#   ./install.sh [--certs DIR] [--aggregator HOST:PORT] [--server-name NAME]
#   ./install.sh uninstall [--purge]
#
# Firmware updates keep only /data (and, on recent releases, /etc/systemd/system), so everything
# lives under /data/twinwatch:
#
#   bin/twinwatch-agent          the static aarch64 binary
#   agent.toml                   configuration (kept on upgrade; --aggregator and --server-name
#                                set their keys)
#   certs/                       ca.crt, agent.crt, agent.key from `certs issue` (--certs DIR)
#   state/                       the agent's buffer
#   twinwatch-agent.service      the unit, copied into /etc/systemd/system
#
# and /data/on_boot.d/10-twinwatch-agent.sh puts the unit back and starts it at boot if an update
# removed it (on_boot.d is run by the community's on-boot-script package, udm-boot). The agent is
# started only when `twinwatch-agent check` accepts its configuration and certificate.
# `uninstall` removes the binary, unit and hook and keeps configuration, certificates and buffer;
# `uninstall --purge` removes /data/twinwatch entirely.
#
# For tests, TWINWATCH_ROOT names a directory standing in for /, SYSTEMCTL the systemctl to call
# (by default none is called under TWINWATCH_ROOT), and TWINWATCH_EXEC a prefix to run the agent
# with (e.g. "qemu-aarch64-static -cpu cortex-a57").
set -eu

ROOT=${TWINWATCH_ROOT:-}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$ROOT/data/twinwatch
UNIT=twinwatch-agent.service
UNIT_DIR=$ROOT/etc/systemd/system
HOOK=$ROOT/data/on_boot.d/10-twinwatch-agent.sh
EXEC=${TWINWATCH_EXEC:-}

say() { printf 'twinwatch: %s\n' "$*"; }
die() { printf 'twinwatch: %s\n' "$*" >&2; exit 1; }

systemctl_() {
    if [ -n "${SYSTEMCTL:-}" ]; then
        "$SYSTEMCTL" "$@"
    elif [ -z "$ROOT" ]; then
        systemctl "$@"
    else
        say "(not the live system) would run: systemctl $*"
    fi
}

# Replaces KEY's line in FILE with KEY = "VALUE" (the first one, at the top level).
set_key() {
    file=$1 key=$2 value=$3
    if grep -q "^$key *=" "$file"; then
        sed -i "0,/^$key *=.*/s||$key = \"$value\"|" "$file"
    else
        # Top-level keys go before the first [section].
        sed -i "0,/^\[/s|^\[|$key = \"$value\"\n\n[|" "$file"
        grep -q "^$key *=" "$file" || printf '%s = "%s"\n' "$key" "$value" >>"$file"
    fi
}

install_agent() {
    certs='' aggregator='' server_name=''
    while [ $# -gt 0 ]; do
        case $1 in
            --certs) certs=${2:?--certs needs a directory}; shift 2 ;;
            --aggregator) aggregator=${2:?--aggregator needs HOST:PORT}; shift 2 ;;
            --server-name) server_name=${2:?--server-name needs a name}; shift 2 ;;
            *) die "unknown option $1 (see the top of $0)" ;;
        esac
    done
    [ -f "$HERE/twinwatch-agent" ] || die "$HERE/twinwatch-agent is missing: run this from the unpacked release"
    if [ -z "$ROOT" ] && [ "$(uname -m)" != aarch64 ]; then
        die "this is the aarch64 build; this machine is $(uname -m)"
    fi
    if [ -n "$certs" ]; then
        for f in ca.crt agent.crt agent.key; do
            [ -f "$certs/$f" ] || die "$certs/$f is missing (from twinwatch-aggregator certs issue)"
        done
    fi

    mkdir -p "$DATA/bin" "$DATA/certs" "$DATA/state" "$UNIT_DIR" "$(dirname "$HOOK")"
    chmod 0700 "$DATA/certs" "$DATA/state"

    # Replaced by rename, so a running agent keeps its old binary until it restarts.
    cp "$HERE/twinwatch-agent" "$DATA/bin/twinwatch-agent.new"
    chmod 0755 "$DATA/bin/twinwatch-agent.new"
    mv -f "$DATA/bin/twinwatch-agent.new" "$DATA/bin/twinwatch-agent"

    if [ -f "$DATA/agent.toml" ]; then
        say "keeping $DATA/agent.toml"
    else
        cp "$HERE/agent.toml" "$DATA/agent.toml"
        chmod 0600 "$DATA/agent.toml"
        say "wrote $DATA/agent.toml"
    fi
    [ -z "$aggregator" ] || set_key "$DATA/agent.toml" aggregator "$aggregator"
    [ -z "$server_name" ] || set_key "$DATA/agent.toml" server_name "$server_name"

    if [ -n "$certs" ]; then
        for f in ca.crt agent.crt; do
            cp "$certs/$f" "$DATA/certs/$f"
            chmod 0644 "$DATA/certs/$f"
        done
        (umask 077 && cp "$certs/agent.key" "$DATA/certs/agent.key")
        chmod 0600 "$DATA/certs/agent.key"
        say "certificates copied into $DATA/certs"
    fi

    cp "$HERE/$UNIT" "$DATA/$UNIT"
    cp "$HERE/$UNIT" "$UNIT_DIR/$UNIT"
    cp "$HERE/on_boot.sh" "$HOOK"
    chmod 0755 "$HOOK"
    say "unit in $UNIT_DIR/$UNIT, boot hook in $HOOK"

    systemctl_ daemon-reload
    systemctl_ enable "$UNIT"
    # shellcheck disable=SC2086 # EXEC is a command prefix, split on purpose
    if checked=$(RUST_BACKTRACE=0 $EXEC "$DATA/bin/twinwatch-agent" --config "$DATA/agent.toml" check 2>&1); then
        systemctl_ restart "$UNIT"
        say "$(printf '%s\n' "$checked" | grep '^certificate:')"
        say "started; logs: journalctl -u twinwatch-agent -f"
    else
        say "installed but not started: the configuration or certificate is not ready:"
        printf '%s\n' "$checked" | sed -n '/^Error:/,$p'
        say "fix $DATA/agent.toml or $DATA/certs, then: $0 (again) or systemctl start twinwatch-agent"
    fi
}

uninstall_agent() {
    purge=no
    case ${1:-} in
        --purge) purge=yes ;;
        '') ;;
        *) die "unknown option $1" ;;
    esac
    if [ -f "$UNIT_DIR/$UNIT" ]; then
        systemctl_ disable --now "$UNIT" || true
    fi
    rm -f "$UNIT_DIR/$UNIT" "$HOOK" "$DATA/$UNIT" "$DATA/bin/twinwatch-agent"
    rmdir "$DATA/bin" 2>/dev/null || true
    systemctl_ daemon-reload
    if [ "$purge" = yes ]; then
        rm -rf "$DATA"
        say "removed, with $DATA"
    else
        say "removed; configuration, certificates and buffer kept in $DATA (uninstall --purge removes them)"
    fi
}

case ${1:-} in
    uninstall) shift; uninstall_agent "$@" ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d' ;;
    *) install_agent "$@" ;;
esac
