#!/bin/sh
# rootseal-init: the one-shot initialiser of the docker-compose demo. Idempotent: every run
# converges to "secrets exist, SoftHSM2 token exists, L0 root exists" and changes nothing
# that is already there. It runs as root only to prepare volume ownership; every HSM
# operation runs as the unprivileged `rootseal` user.
#
#   1. generate the HSM user PIN, SO PIN and the rootseal API token (only if absent)
#   2. create the SoftHSM2 token `rootseal` (only if absent)
#   3. `rootseal init` (the Security Officer creates the L0 root on the token; reports and exits 0
#      if it exists)
#
# Secrets are never printed. Files are written to a temporary name and renamed, so a
# container killed mid-way leaves either the old state or the new one.
set -eu
umask 077

CONFIG=${ROOTSEAL_CONFIG:-/etc/rootseal/rootseal.toml}
RUN_AS=rootseal
# Directory the demo job writes OpenBao's recovery key to (shared group, see compose file).
DEMO_DIR=${ROOTSEAL_DEMO_DIR:-/openbao/init}

log() { echo "rootseal-init: $*"; }
die() { echo "rootseal-init: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must start as root (it fixes volume ownership, then drops to user $RUN_AS)"
id "$RUN_AS" >/dev/null 2>&1 || die "user $RUN_AS does not exist in this image"
[ -f "$CONFIG" ] || die "config file $CONFIG is missing (mount docker/rootseal/ at /etc/rootseal)"
[ -n "${SOFTHSM2_CONF:-}" ] && [ -f "$SOFTHSM2_CONF" ] ||
    die "SoftHSM2 config SOFTHSM2_CONF=${SOFTHSM2_CONF:-<unset>} is missing (mount docker/rootseal/ at /etc/rootseal)"

# `key = "value"` of one [section] of the TOML config (our config is flat and simple).
toml_get() {
    sed -n "/^[[:space:]]*\[$1\][[:space:]]*\$/,/^[[:space:]]*\[/ s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*\"\([^\"]*\)\".*/\1/p" "$CONFIG" | head -n1
}
PIN_FILE=$(toml_get hsm pin_file)
LABEL=$(toml_get hsm token_label)
TOKEN_FILE=$(toml_get auth root_token_file)
KEYS_DIR=$(toml_get storage path)
[ -n "$PIN_FILE" ] || die "$CONFIG has no [hsm] pin_file"
[ -n "$LABEL" ] || die "$CONFIG has no [hsm] token_label"
[ -n "$TOKEN_FILE" ] || die "$CONFIG has no [auth] root_token_file"
SO_PIN_FILE=$(dirname "$PIN_FILE")/hsm-so-pin
TOKEN_DIR=$(sed -n 's/^[[:space:]]*directories\.tokendir[[:space:]]*=[[:space:]]*//p' "$SOFTHSM2_CONF" | tail -n1 | tr -d '[:space:]')
[ -n "$TOKEN_DIR" ] || die "$SOFTHSM2_CONF has no directories.tokendir"

as_user() { setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups -- env HOME=/var/lib/rootseal "$@"; }

# Volume ownership: private to rootseal, except the API-token directory which the
# `rootseal` group (gid 10001, added to the OpenBao containers) may read.
for d in "$TOKEN_DIR" "$(dirname "$PIN_FILE")" ${KEYS_DIR:+"$KEYS_DIR"}; do
    mkdir -p "$d"; chown "$RUN_AS:$RUN_AS" "$d"; chmod 0700 "$d"
done
mkdir -p "$(dirname "$TOKEN_FILE")"
chown "$RUN_AS:$RUN_AS" "$(dirname "$TOKEN_FILE")"; chmod 0750 "$(dirname "$TOKEN_FILE")"
if [ -d "$DEMO_DIR" ]; then
    chown "root:$RUN_AS" "$DEMO_DIR"; chmod 2770 "$DEMO_DIR"
fi
# Leftovers of a run killed between write and rename.
rm -f "$(dirname "$PIN_FILE")"/.tmp.* "$(dirname "$TOKEN_FILE")"/.tmp.*

token_count() {
    as_user softhsm2-util --show-slots 2>/dev/null |
        grep -Ec "^[[:space:]]*Label:[[:space:]]+${LABEL}[[:space:]]*\$" || true
}
token_present() {
    n=$(token_count)
    [ "$n" -le 1 ] || die "$n SoftHSM2 tokens are labelled '$LABEL' in $TOKEN_DIR; rootseal needs exactly one: remove the extra token directory (softhsm2-util --delete-token --serial ...)"
    [ "$n" = 1 ]
}

# new_secret FILE MODE: 48 hex characters from the kernel CSPRNG, atomically.
new_secret() {
    tmp="$(dirname "$1")/.tmp.$(basename "$1").$$"
    od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$tmp"
    [ "$(wc -c <"$tmp")" -eq 48 ] || die "could not read /dev/urandom"
    chown "$RUN_AS:$RUN_AS" "$tmp"; chmod "$2" "$tmp"
    mv -f "$tmp" "$1"
}

if token_present; then HAVE_TOKEN=1; else HAVE_TOKEN=0; fi

# 1. Secrets.
if [ -s "$PIN_FILE" ]; then
    log "HSM PIN present ($PIN_FILE)"
elif [ "$HAVE_TOKEN" = 1 ]; then
    die "secret file $PIN_FILE is missing or empty, but the SoftHSM2 token '$LABEL' already exists in $TOKEN_DIR: restore the PIN file (volume hsm-secrets) or start over with 'docker compose down -v'"
else
    new_secret "$PIN_FILE" 0400
    log "generated the HSM user PIN ($PIN_FILE)"
fi
if [ ! -s "$SO_PIN_FILE" ]; then
    if [ "$HAVE_TOKEN" = 1 ]; then
        log "warning: $SO_PIN_FILE is missing; the token works without it, but it cannot be re-initialised"
    else
        new_secret "$SO_PIN_FILE" 0400
        log "generated the HSM SO PIN ($SO_PIN_FILE)"
    fi
fi
if [ -s "$TOKEN_FILE" ]; then
    log "rootseal API token present ($TOKEN_FILE)"
else
    new_secret "$TOKEN_FILE" 0440
    log "generated the rootseal API token ($TOKEN_FILE; readable by group $RUN_AS)"
fi
chown "$RUN_AS:$RUN_AS" "$PIN_FILE" "$TOKEN_FILE"
chmod 0400 "$PIN_FILE"; chmod 0440 "$TOKEN_FILE"

# 2. SoftHSM2 token.
if [ "$HAVE_TOKEN" = 1 ]; then
    log "SoftHSM2 token '$LABEL' exists in $TOKEN_DIR; leaving it"
else
    log "creating SoftHSM2 token '$LABEL' in $TOKEN_DIR"
    as_user softhsm2-util --init-token --free --label "$LABEL" \
        --pin "$(cat "$PIN_FILE")" --so-pin "$(cat "$SO_PIN_FILE")" >/dev/null ||
        die "softhsm2-util --init-token failed for token '$LABEL' in $TOKEN_DIR"
    token_present || die "SoftHSM2 token '$LABEL' was created but is not listed by softhsm2-util --show-slots"
fi

# 3. L0 root (idempotent by contract: reports what exists and changes nothing).
log "rootseal init --config $CONFIG"
# The L0 is made by the token's Security Officer: the SO PIN comes from its file, never from
# rootseal.toml, and the serving container never sees it.
as_user rootseal init --config "$CONFIG" --so-pin-file "$SO_PIN_FILE" || die "rootseal init failed (see the message above)"
# A root left half-made by an interrupted earlier run must not be served as if it were whole.
status=$(as_user rootseal root status --config "$CONFIG" 2>/dev/null) || die "rootseal root status failed"
if printf '%s\n' "$status" | grep -qi 'missing'; then
    die "the L0 root on token '$LABEL' is incomplete ($(printf '%s\n' "$status" | grep -i -m1 missing | sed 's/^[[:space:]]*//')): an earlier 'rootseal init' was interrupted. Start over with 'docker compose down -v' (SoftHSM2 demo), or remove the incomplete root objects with the HSM's tools"
fi
printf '%s\n' "$status" | grep -q 'Current' || die "no current L0 root on token '$LABEL' after rootseal init: $status"
log "done: token '$LABEL' and its L0 root are ready"
