#!/bin/sh
# Entrypoint of the stand-in openbao/openbao image: the same contract as the official one.
#   docker run openbao/openbao:2.7.2 server [flags]   -> bao server -config=/openbao/config [flags]
#   docker run openbao/openbao:2.7.2 -version / status / operator init ... -> bao ...
#   anything else (sh, bao, ...)                      -> run as given
# When started as root, bao runs as the unprivileged `openbao` user.
set -e
ulimit -c 0 2>/dev/null || true

BAO_CONFIG_DIR=/openbao/config
if [ -n "${BAO_LOCAL_CONFIG:-}" ]; then
    printf '%s\n' "$BAO_LOCAL_CONFIG" >"$BAO_CONFIG_DIR/local.json"
fi

case "${1:-}" in
    -*) set -- bao "$@" ;;
    server)
        shift
        set -- bao server -config="$BAO_CONFIG_DIR" \
            -dev-root-token-id="${BAO_DEV_ROOT_TOKEN_ID:-}" \
            -dev-listen-address="${BAO_DEV_LISTEN_ADDRESS:-0.0.0.0:8200}" "$@"
        ;;
    version) set -- bao "$@" ;;
    "") set -- bao ;;
    *)
        if [ "$1" != bao ] && bao "$1" -h 2>&1 | grep -q "^Usage: bao $1"; then
            set -- bao "$@"
        fi
        ;;
esac

if [ "$1" = bao ] && [ "$(id -u)" = 0 ]; then
    if [ -z "${SKIP_CHOWN:-}" ]; then
        for d in /openbao/config /openbao/logs /openbao/file; do
            [ "$(stat -c %u "$d")" = "$(id -u openbao)" ] || chown -R openbao:openbao "$d" ||
                echo "Could not chown $d (may not have appropriate permissions)"
        done
    fi
    exec setpriv --reuid=openbao --regid=openbao --init-groups -- env HOME=/openbao "$@"
fi
exec "$@"
