#!/bin/sh
# The demo job: initialise OpenBao once (recovery key and root token kept in the
# openbao-init volume, never printed), then show that
#   - OpenBao is unsealed by rootseal (seal type "transit"),
#   - rootseal encrypts and decrypts through Vault's transit API,
#   - OpenBao stores and returns a KV secret.
# Safe to run again: it re-uses the saved init result and only repeats the checks.
set -eu
umask 077

INIT_DIR=${DEMO_INIT_DIR:-/openbao/init}
INIT_FILE=$INIT_DIR/init.json
TOKEN_FILE=${ROOTSEAL_TOKEN_FILE:-/run/secrets/rootseal/rootseal-token}
ROOTSEAL_ADDR=${ROOTSEAL_ADDR:-http://rootseal:8210}
BAO_ADDR=${BAO_ADDR:-http://openbao:8200}
WAIT_SECONDS=${DEMO_WAIT_SECONDS:-180}
# "transit" behind rootseal serve; the KMS plugin profile sets its own seal type.
EXPECT_SEAL_TYPE=${DEMO_SEAL_TYPE:-transit}
export BAO_ADDR
unset BAO_TOKEN VAULT_TOKEN

say() { echo "demo: $*"; }
die() { echo "demo: ERROR: $*" >&2; exit 1; }

[ -r "$TOKEN_FILE" ] || die "secret file $TOKEN_FILE is missing or unreadable (created by the rootseal-init service)"
[ -d "$INIT_DIR" ] && [ -w "$INIT_DIR" ] || die "$INIT_DIR is not writable (the openbao-init volume, prepared by rootseal-init)"

# bao status: 0 = unsealed, 2 = sealed, 1 = error/unreachable.
status_rc() { set +e; bao status >/dev/null 2>&1; rc=$?; set -e; echo "$rc"; }
wait_for() { # wait_for WHAT RC...
    what=$1; shift; waited=0
    while :; do
        rc=$(status_rc)
        for want in "$@"; do [ "$rc" = "$want" ] && return 0; done
        [ "$waited" -ge "$WAIT_SECONDS" ] && die "OpenBao at $BAO_ADDR is not $what after ${WAIT_SECONDS}s (bao status exit $rc)"
        sleep 2; waited=$((waited + 2))
    done
}

say "waiting for OpenBao at $BAO_ADDR"
wait_for "reachable" 0 2
if bao status -format=json 2>/dev/null | grep -q '"initialized": *true'; then
    [ -s "$INIT_FILE" ] || die "OpenBao is already initialised, but $INIT_FILE is missing: its recovery key and root token are not in the openbao-init volume. Use the copy you kept, or start over with 'docker compose down -v'"
    say "OpenBao is already initialised (recovery key and root token in $INIT_FILE)"
else
    if [ -e "$INIT_FILE" ]; then
        mv -f "$INIT_FILE" "$INIT_FILE.stale"
        say "OpenBao storage is new: the old $INIT_FILE no longer applies, moved to $INIT_FILE.stale"
    fi
    say "bao operator init (1 recovery share; the root key is sealed by rootseal)"
    bao operator init -recovery-shares=1 -recovery-threshold=1 -format=json >"$INIT_FILE.tmp" ||
        { rm -f "$INIT_FILE.tmp"; die "bao operator init failed"; }
    mv -f "$INIT_FILE.tmp" "$INIT_FILE"
    say "recovery key and root token saved to $INIT_FILE (volume openbao-init; not printed)"
fi
ROOT_TOKEN=$(sed -n 's/^[[:space:]]*"root_token":[[:space:]]*"\([^"]*\)".*/\1/p' "$INIT_FILE")
[ -n "$ROOT_TOKEN" ] || die "no root_token in $INIT_FILE"

say "waiting for OpenBao to unseal through rootseal"
wait_for "unsealed" 0
SEAL_TYPE=$(bao status -format=json | sed -n 's/^[[:space:]]*"type":[[:space:]]*"\([^"]*\)".*/\1/p')
[ "$SEAL_TYPE" = "$EXPECT_SEAL_TYPE" ] || die "OpenBao seal type is '$SEAL_TYPE', expected $EXPECT_SEAL_TYPE"
say "OpenBao is initialised and unsealed by rootseal; seal type: $SEAL_TYPE"

# Transit round trip through rootseal, with the same client OpenBao's seal uses.
MESSAGE="hello from rootseal $(date -u +%Y-%m-%dT%H:%M:%SZ)"
PLAINTEXT=$(printf '%s' "$MESSAGE" | base64 | tr -d '\n')
CIPHERTEXT=$(BAO_ADDR=$ROOTSEAL_ADDR BAO_TOKEN=$(cat "$TOKEN_FILE") \
    bao write -field=ciphertext transit/encrypt/demo plaintext="$PLAINTEXT") ||
    die "rootseal transit encrypt failed"
case "$CIPHERTEXT" in vault:v*) ;; *) die "unexpected ciphertext from rootseal: $CIPHERTEXT" ;; esac
say "rootseal encrypt  transit/encrypt/demo -> $CIPHERTEXT"
DECRYPTED=$(BAO_ADDR=$ROOTSEAL_ADDR BAO_TOKEN=$(cat "$TOKEN_FILE") \
    bao write -field=plaintext transit/decrypt/demo ciphertext="$CIPHERTEXT") ||
    die "rootseal transit decrypt failed"
[ "$(printf '%s' "$DECRYPTED" | base64 -d)" = "$MESSAGE" ] || die "rootseal decrypt did not return the plaintext"
say "rootseal decrypt  transit/decrypt/demo -> \"$MESSAGE\""

# A KV v2 secret in OpenBao (whose storage is protected by the rootseal-sealed root key).
export BAO_TOKEN="$ROOT_TOKEN"
if ! bao secrets list -format=json | grep -q '"secret/"'; then
    bao secrets enable -path=secret -version=2 kv >/dev/null
    say "enabled KV v2 at secret/"
fi
bao kv put -mount=secret demo message="$MESSAGE" >/dev/null
GOT=$(bao kv get -mount=secret -field=message demo)
[ "$GOT" = "$MESSAGE" ] || die "KV read-back mismatch"
say "OpenBao KV       secret/demo message=\"$GOT\""
say "OK. Try: docker compose exec openbao bao status"
