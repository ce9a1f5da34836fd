#!/bin/sh
# Container entrypoint: use the mounted rules file when there is one, then hand PID 1 to corsproxy.
#
# /etc/corsproxy/config.yaml is used only when the file exists and nothing else says what to proxy:
# neither CORSPROXY_CONFIG nor CORSPROXY_UPSTREAM is set, and no --config or --upstream flag is
# given. So `-e CORSPROXY_UPSTREAM=...` alone works without a mount, and a mount alone works too.
set -eu

CONFIG_FILE=/etc/corsproxy/config.yaml

chosen=""
for arg in "$@"; do
    case "$arg" in
        --config | --config=* | --upstream | --upstream=*) chosen=yes ;;
    esac
done

if [ -z "$chosen" ] && [ -z "${CORSPROXY_CONFIG:-}" ] && [ -z "${CORSPROXY_UPSTREAM:-}" ] \
    && [ -f "$CONFIG_FILE" ]; then
    export CORSPROXY_CONFIG="$CONFIG_FILE"
fi

# exec: corsproxy becomes PID 1 (or init's only child) and receives SIGTERM itself.
exec corsproxy "$@"
