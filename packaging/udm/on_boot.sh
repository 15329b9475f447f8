#!/bin/sh
# /data/on_boot.d/10-twinwatch-agent.sh, written by the twinwatch agent's install.sh: after a
# UniFi OS firmware update has removed the unit, put it back from /data/twinwatch and start the
# agent. Harmless when nothing was removed. TWINWATCH_ROOT and SYSTEMCTL as in install.sh.
ROOT=${TWINWATCH_ROOT:-}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
src=$ROOT/data/twinwatch/twinwatch-agent.service
dst=$ROOT/etc/systemd/system/twinwatch-agent.service
[ -f "$src" ] || exit 0
if ! cmp -s "$src" "$dst" 2>/dev/null; then
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
    "$SYSTEMCTL" daemon-reload
fi
"$SYSTEMCTL" enable twinwatch-agent.service
"$SYSTEMCTL" start twinwatch-agent.service
