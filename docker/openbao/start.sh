#!/bin/sh
# Start OpenBao with the transit seal pointed at rootseal. The rootseal API token comes from
# the volume the rootseal-init service fills, through the environment (VAULT_TOKEN, which
# the transit seal reads), so it is never written into a config file or an image.
set -eu
TOKEN_FILE=${ROOTSEAL_TOKEN_FILE:-/run/secrets/rootseal/rootseal-token}
CONFIG=${OPENBAO_CONFIG:-/etc/openbao/rootseal/openbao.hcl}

die() { echo "openbao: ERROR: $*" >&2; exit 1; }
[ -f "$CONFIG" ] || die "config $CONFIG is missing (mount docker/openbao/)"
[ -e "$TOKEN_FILE" ] || die "secret file $TOKEN_FILE is missing: the rootseal-init service creates it in the rootseal-api-token volume"
[ -r "$TOKEN_FILE" ] || die "secret file $TOKEN_FILE is not readable by $(id -un) (needs group_add: the rootseal gid 10001)"
VAULT_TOKEN=$(cat "$TOKEN_FILE")
[ -n "$VAULT_TOKEN" ] || die "secret file $TOKEN_FILE is empty"
export VAULT_TOKEN
unset BAO_TOKEN
exec bao server -config="$CONFIG"
