#!/bin/sh
# The container's start: on the first boot of a fresh volume, create the CA and the server
# certificate for the app's name (and $TWINWATCH_SERVER_NAMES, space-separated, if set), then run
# the aggregator. TWINWATCH_CONFIG overrides the configuration file (tests).
set -eu
config=${TWINWATCH_CONFIG:-/etc/twinwatch/aggregator.toml}
bin=$(dirname "$0")/twinwatch-aggregator
if ! "$bin" --config "$config" check >/dev/null 2>&1; then
    names=${TWINWATCH_SERVER_NAMES:-}
    [ -z "${FLY_APP_NAME:-}" ] || names="$FLY_APP_NAME.fly.dev $names"
    set --
    for n in $names; do set -- "$@" --name "$n"; done
    if "$bin" --config "$config" certs init "$@"; then
        echo "twinwatch: first start: CA and server certificate created for: localhost $names"
    fi
fi
exec "$bin" --config "$config" run
