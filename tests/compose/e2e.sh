#!/usr/bin/env bash
# End-to-end test of the docker-compose demo on a real Docker engine, registry or not.
#
#   tests/compose/e2e.sh
#
# 1. builds the base images the Dockerfile and docker-compose.yml name (debian:bookworm-slim,
#    openbao/openbao:2.7.2) locally when missing (tests/compose/base-images.sh; reused after);
# 2. builds rootseal on the host and packages it with `--target runtime-prebuilt`;
# 3. brings up the repository's docker-compose.yml under a unique project name and asserts:
#    the initialiser and the demo job succeed; OpenBao is initialised and unsealed through
#    rootseal (seal type transit); data round-trips through rootseal's transit API (and a
#    wrong token is refused); a KV secret is written; starting the stack twice converges;
#    OpenBao unseals again after its container restarts; the token and all data survive
#    `compose restart`; with rootseal stopped, a restarted OpenBao stays sealed, and unseals
#    once rootseal is back; a missing HSM PIN stops the initialiser with a message naming it;
# 4. tears everything down (`down -v --remove-orphans`) and checks nothing is left.
# Exits 0 only when every assertion passed.
#
# Environment:
#   ROOTSEAL_E2E_IMAGE   use this already-built rootseal image (skip cargo and docker build)
#   ROOTSEAL_E2E_KEEP=1  on failure, leave the stack up for inspection (prints how to remove it)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

PROJECT="rootseal-e2e-$(date +%s)-$$"
IMAGE=${ROOTSEAL_E2E_IMAGE:-rootseal/rootseal:e2e}
KMS_IMAGE=rootseal/openbao-kms:e2e
START=$(date +%s)
FAILED=1

# logs_have SERVICE GREP-ARGS...: (no pipe into grep -q: with pipefail, SIGPIPE would fail it)
logs_have() { local l; l=$(compose logs --no-color "$1" 2>&1); shift; grep -q "$@" <<<"$l"; }
step() { printf '\n[e2e %4ss] == %s\n' "$(($(date +%s) - START))" "$*"; }
info() { printf '[e2e %4ss]    %s\n' "$(($(date +%s) - START))" "$*"; }
fail() { printf '[e2e %4ss] FAIL: %s\n' "$(($(date +%s) - START))" "$*" >&2; exit 1; }
pass() { printf '[e2e %4ss]    ok: %s\n' "$(($(date +%s) - START))" "$*"; }

docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info)"
if docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
else
    fail "neither 'docker compose' (v2 plugin) nor 'docker-compose' is installed"
fi
compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" "$@"; }

# Ports on 127.0.0.1 that nothing else uses, so parallel runs and other stacks don't clash.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export ROOTSEAL_IMAGE="$IMAGE" OPENBAO_KMS_IMAGE="$KMS_IMAGE" ROOTSEAL_PORT OPENBAO_PORT OPENBAO_KMS_PORT
ROOTSEAL_PORT=$(free_port)
OPENBAO_PORT=$(free_port)
OPENBAO_KMS_PORT=$(free_port)

project_containers() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; }
project_volumes() { docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"; }
# Id of a service's (non one-off) container, running or not.
cid() {
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False" | head -n1
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $FAILED != 0 ]]; then
        rc=${rc/#0/1}
        printf '\n[e2e] ---- logs of project %s (last 60 lines per service) ----\n' "$PROJECT" >&2
        compose --profile kms-plugin logs --no-color --tail=60 >&2 2>&1 || true
        if [[ "${ROOTSEAL_E2E_KEEP:-0}" == 1 ]]; then
            printf '[e2e] stack left up (ROOTSEAL_E2E_KEEP=1); remove it with:\n  %s -p %s down -v --remove-orphans\n' \
                "${COMPOSE_CMD[*]}" "$PROJECT" >&2
            exit "$rc"
        fi
    fi
    step "teardown: down -v --remove-orphans"
    compose --profile kms-plugin down -v --remove-orphans --timeout 10 >/dev/null 2>&1 ||
        compose --profile kms-plugin down -v --remove-orphans >&2 || true
    local left
    left=$(project_containers; project_volumes)
    if [[ -n "$left" ]]; then
        printf '[e2e] FAIL: left behind after down -v: %s\n' "$left" >&2
        rc=1
    fi
    if [[ $rc == 0 ]]; then
        printf '\n[e2e] PASS in %ss\n' "$(($(date +%s) - START))"
    else
        printf '\n[e2e] FAILED (exit %s) after %ss\n' "$rc" "$(($(date +%s) - START))" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
# drop_replaced OLD_ID TAG: remove the image a rebuild of TAG replaced (no dangling pile-up in CI).
drop_replaced() { [[ -n "$1" && "$1" != "$(image_id "$2")" ]] && docker rmi "$1" >/dev/null 2>&1 || true; }

# wait_until SECONDS WHAT CMD...: poll CMD every 2 s until it succeeds.
wait_until() {
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - t0 < limit)) || fail "$what: not reached within ${limit}s"
        sleep 2
    done
    info "$what (${SECONDS}s-${t0}s = $((SECONDS - t0))s)"
}

# ---------------------------------------------------------------------------------------------
step "base images (${COMPOSE_CMD[*]}; engine $(docker version -f '{{.Server.Version}}'))"
"$ROOT/tests/compose/base-images.sh"

old_image=""
if [[ -n "${ROOTSEAL_E2E_IMAGE:-}" ]]; then
    step "using prebuilt rootseal image $IMAGE"
    docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "ROOTSEAL_E2E_IMAGE=$IMAGE does not exist"
else
    step "cargo build --release -p rootseal"
    cargo build --release --locked -p rootseal
    step "docker build --target runtime-prebuilt -t $IMAGE"
    old_image=$(image_id "$IMAGE")
    docker build --force-rm --target runtime-prebuilt -t "$IMAGE" . >/tmp/rootseal-e2e-build.$$.log 2>&1 ||
        { cat /tmp/rootseal-e2e-build.$$.log >&2; rm -f /tmp/rootseal-e2e-build.$$.log; fail "docker build failed"; }
    grep -i 'sending build context' /tmp/rootseal-e2e-build.$$.log | sed 's/^/[e2e]    /' || true
    rm -f /tmp/rootseal-e2e-build.$$.log
fi

step "docker build -t $KMS_IMAGE docker/openbao-kms (profile kms-plugin: OpenBao + rootseal KMS plugin)"
old_kms_image=$(image_id "$KMS_IMAGE")
docker build --force-rm -q -t "$KMS_IMAGE" --build-arg ROOTSEAL_IMAGE="$IMAGE" docker/openbao-kms >/dev/null 2>/tmp/rootseal-e2e-kms.$$.log ||
    { cat /tmp/rootseal-e2e-kms.$$.log >&2; rm -f /tmp/rootseal-e2e-kms.$$.log; fail "docker build of $KMS_IMAGE failed"; }
rm -f /tmp/rootseal-e2e-kms.$$.log
drop_replaced "$old_kms_image" "$KMS_IMAGE"
drop_replaced "$old_image" "$IMAGE" # after the kms image, which was built on it

# ---------------------------------------------------------------------------------------------
step "compose up (project $PROJECT, rootseal :$ROOTSEAL_PORT, OpenBao :$OPENBAO_PORT)"
compose config -q || fail "docker-compose.yml does not validate"
# Bad input first: an initialiser killed at a random point of its first run (secrets, token
# creation or `rootseal init`); the real start below must converge from whatever it left.
KILLED="$PROJECT-init-killed"
compose run -d --name "$KILLED" rootseal-init >/dev/null
sleep "${ROOTSEAL_E2E_KILL_DELAY:-0.$((RANDOM % 10))}"
docker kill "$KILLED" >/dev/null 2>&1 || true
info "initialiser killed mid-run; it got as far as: $(docker logs "$KILLED" 2>&1 | tail -n1)"
docker rm -f "$KILLED" >/dev/null
if compose up -d --no-build; then
    info "the stack converged after the interrupted initialiser"
else
    # Acceptable only if the initialiser named the problem (a half-made L0 root).
    logs_have rootseal-init "rootseal-init: ERROR: the L0 root on token 'rootseal' is incomplete" ||
        fail "after an interrupted initialiser, 'up' failed without a message naming the problem"
    info "the initialiser stopped with: $(compose logs --no-color rootseal-init | grep -m1 ERROR)"
    info "starting over from empty volumes (down -v) for the rest of the test"
    compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1
    compose up -d --no-build
fi

container_exited() { [[ "$(docker inspect -f '{{.State.Status}}' "$(cid "$1")" 2>/dev/null)" == exited ]]; }
exit_code() { docker inspect -f '{{.State.ExitCode}}' "$(cid "$1")"; }
started_at() { docker inspect -f '{{.State.StartedAt}}' "$(cid "$1")" 2>/dev/null || true; }
# ran_again SERVICE PREVIOUS_STARTED_AT: the one-shot ran again and has exited.
ran_again() { container_exited "$1" && [[ "$(started_at "$1")" != "$2" ]]; }

wait_until 60 "rootseal-init finished" container_exited rootseal-init
[[ $(exit_code rootseal-init) == 0 ]] || fail "rootseal-init exited $(exit_code rootseal-init)"
logs_have rootseal-init "rootseal-init: done" || fail "rootseal-init did not report done"
pass "rootseal-init completed: secrets, SoftHSM2 token and L0 root in place"

healthy() { [[ "$(docker inspect -f '{{.State.Health.Status}}' "$(cid "$1")" 2>/dev/null)" == healthy ]]; }
wait_until 90 "rootseal healthy (/v1/sys/health)" healthy rootseal
pass "rootseal is healthy"

wait_until 240 "demo job finished" container_exited demo
compose logs --no-color demo | sed 's/^/[e2e]    | /'
[[ $(exit_code demo) == 0 ]] || fail "demo job exited $(exit_code demo)"
pass "demo job: bao operator init, transit round trip through rootseal, KV write"

# ---------------------------------------------------------------------------------------------
step "OpenBao is initialised and unsealed through rootseal"
# seal status through the published port: no token needed, works while the container restarts
seal_status() { curl -fsS --max-time 3 "http://127.0.0.1:$OPENBAO_PORT/v1/sys/seal-status" 2>/dev/null; }
unsealed() { [[ "$(seal_status)" == *'"sealed":false'* ]]; }
assert_unsealed_via_rootseal() {
    local st
    st=$(seal_status) || fail "OpenBao seal-status not reachable"
    grep -q '"initialized":true' <<<"$st" || fail "OpenBao not initialised: $st"
    grep -q '"sealed":false' <<<"$st" || fail "OpenBao sealed: $st"
    grep -q '"type":"transit"' <<<"$st" || fail "OpenBao seal type is not transit: $st"
}
assert_unsealed_via_rootseal
compose exec -T openbao bao status >/dev/null || fail "'bao status' in the openbao container does not report unsealed"
compose exec -T openbao bao status | sed 's/^/[e2e]    | /'
pass "initialized=true sealed=false type=transit"

# ---------------------------------------------------------------------------------------------
step "data round-trips through rootseal's transit API (host -> published port)"
RS="http://127.0.0.1:$ROOTSEAL_PORT"
# The token stays in this shell variable; it is never printed.
RS_TOKEN=$(compose exec -T rootseal cat /run/secrets/rootseal/rootseal-token)
[[ ${#RS_TOKEN} -ge 32 ]] || fail "rootseal API token missing or short"
rs_post() { # rs_post PATH JSON [TOKEN] -> body; sets HTTP_CODE
    local out
    out=$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST -H "X-Vault-Token: ${3-$RS_TOKEN}" \
        -H 'Content-Type: application/json' -d "$2" "$RS$1") || fail "POST $1: no answer"
    HTTP_CODE=${out##*$'\n'}
    BODY=${out%$'\n'*}
}
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][sys.argv[1]])' "$1"; }
MSG="e2e $(date +%s%N) $RANDOM"
PT=$(printf '%s' "$MSG" | base64 -w0)
rs_post /v1/transit/encrypt/e2e "{\"plaintext\":\"$PT\"}"
[[ $HTTP_CODE == 200 ]] || fail "encrypt: HTTP $HTTP_CODE $BODY"
CT=$(json_field ciphertext <<<"$BODY")
[[ $CT == vault:v* ]] || fail "encrypt: unexpected ciphertext '$CT'"
[[ $CT != *"$PT"* ]] || fail "encrypt: ciphertext contains the plaintext"
rs_post /v1/transit/decrypt/e2e "{\"ciphertext\":\"$CT\"}"
[[ $HTTP_CODE == 200 ]] || fail "decrypt: HTTP $HTTP_CODE $BODY"
[[ "$(json_field plaintext <<<"$BODY" | base64 -d)" == "$MSG" ]] || fail "decrypt did not return the plaintext"
pass "encrypt/decrypt round trip ($CT)"
rs_post /v1/transit/decrypt/e2e "{\"ciphertext\":\"$CT\"}" "wrong-token-$RANDOM"
[[ $HTTP_CODE == 403 || $HTTP_CODE == 401 ]] || fail "wrong token: expected 401/403, got HTTP $HTTP_CODE"
grep -q '"errors"' <<<"$BODY" || fail "wrong token: no Vault error envelope: $BODY"
pass "a wrong token is refused (HTTP $HTTP_CODE)"

# bao as a client, inside the stack, using the demo job's saved root token.
bao_in_stack() { # runs a shell snippet with BAO_TOKEN = OpenBao root token from the openbao-init volume
    compose run --rm --no-deps -T --entrypoint /bin/sh demo -c \
        'BAO_TOKEN=$(sed -n "s/^[[:space:]]*\"root_token\":[[:space:]]*\"\([^\"]*\)\".*/\1/p" /openbao/init/init.json); export BAO_TOKEN; '"$1" 2>/dev/null
}
KV_VALUE="kv-$(date +%s%N)"
bao_in_stack "bao kv put -mount=secret e2e value=$KV_VALUE >/dev/null" || fail "KV write failed"
kv_intact() { [[ "$(bao_in_stack 'bao kv get -mount=secret -field=value e2e')" == "$KV_VALUE" ]]; }
kv_intact || fail "KV read-back failed"
pass "KV v2 write and read in OpenBao"
ciphertext_intact() {
    rs_post /v1/transit/decrypt/e2e "{\"ciphertext\":\"$CT\"}"
    [[ $HTTP_CODE == 200 && "$(json_field plaintext <<<"$BODY" | base64 -d)" == "$MSG" ]]
}

# ---------------------------------------------------------------------------------------------
step "starting the stack a second time converges"
init_started=$(started_at rootseal-init)
demo_started=$(started_at demo)
compose up -d --no-build
wait_until 60 "rootseal-init finished again" ran_again rootseal-init "$init_started"
[[ $(exit_code rootseal-init) == 0 ]] || fail "second rootseal-init exited $(exit_code rootseal-init)"
logs_have rootseal-init "token 'rootseal' exists in .*; leaving it" ||
    fail "second rootseal-init did not keep the existing token"
wait_until 120 "OpenBao unsealed" unsealed
wait_until 120 "demo job finished again" ran_again demo "$demo_started"
[[ $(exit_code demo) == 0 ]] || fail "second demo run exited $(exit_code demo)"
assert_unsealed_via_rootseal
kv_intact || fail "KV data lost after second up"
pass "second 'up' changed nothing and everything still works"

# ---------------------------------------------------------------------------------------------
step "restart the OpenBao container: it unseals again through rootseal"
compose restart openbao
wait_until 120 "OpenBao unsealed after restart" unsealed
assert_unsealed_via_rootseal
kv_intact || fail "KV data lost after OpenBao restart"
pass "OpenBao unsealed again after restart; KV data intact"

# ---------------------------------------------------------------------------------------------
step "compose restart (whole stack): token, L0 root and OpenBao data survive"
compose restart
wait_until 120 "rootseal healthy after restart" healthy rootseal
wait_until 180 "OpenBao unsealed after stack restart" unsealed
assert_unsealed_via_rootseal
ciphertext_intact || fail "ciphertext from before the restart no longer decrypts (HTTP $HTTP_CODE)"
kv_intact || fail "KV data lost after stack restart"
pass "old ciphertext decrypts; OpenBao unsealed with its data"

# ---------------------------------------------------------------------------------------------
step "rootseal stopped: a restarted OpenBao stays sealed"
compose stop rootseal
compose restart openbao
sealed_polls=0
t0=$SECONDS
while ((SECONDS - t0 < 30)); do
    if st=$(seal_status); then
        grep -q '"sealed":false' <<<"$st" && fail "OpenBao unsealed without rootseal: $st"
    fi
    sealed_polls=$((sealed_polls + 1))
    sleep 2
done
logs_have openbao 'Error configuring seal "transit"' ||
    logs_have openbao -i 'seal.*\(connection refused\|no such host\|dial tcp\)' ||
    fail "OpenBao logs do not show the transit seal failing"
pass "never unsealed during ${sealed_polls} polls over 30s; logs show the transit seal failing"

step "rootseal back: OpenBao converges (restart: on-failure) and unseals"
compose start rootseal
wait_until 90 "rootseal healthy" healthy rootseal
wait_until 180 "OpenBao unsealed once rootseal is back" unsealed
kv_intact || fail "KV data lost"
pass "OpenBao unsealed again with its data"

# ---------------------------------------------------------------------------------------------
step "missing secret file: the initialiser stops with a message naming it"
VOL_HSM_SECRETS=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | grep -E '_hsm-secrets$') ||
    fail "hsm-secrets volume not found"
docker run --rm --network none --user root --entrypoint /bin/sh -v "$VOL_HSM_SECRETS:/s" "$IMAGE" \
    -c 'mv /s/hsm-pin /s/hsm-pin.e2e-moved'
set +e
out=$(compose run --rm -T rootseal-init 2>&1)
rc=$?
set -e
[[ $rc != 0 ]] || fail "rootseal-init succeeded with the HSM PIN file missing"
grep -q 'hsm-pin is missing' <<<"$out" || fail "rootseal-init's message does not name the missing file: $out"
info "rootseal-init: $(grep -m1 ERROR <<<"$out")"
docker run --rm --network none --user root --entrypoint /bin/sh -v "$VOL_HSM_SECRETS:/s" "$IMAGE" \
    -c 'mv /s/hsm-pin.e2e-moved /s/hsm-pin'
compose run --rm -T rootseal-init >/dev/null 2>&1 || fail "rootseal-init fails after the PIN file was restored"
pass "missing PIN: exit $rc naming the file; restored PIN: initialiser converges again"

# ---------------------------------------------------------------------------------------------
step "profile kms-plugin: a second OpenBao with rootseal as its KMS plugin"
compose --profile kms-plugin up -d --no-build
wait_until 240 "demo-kms job finished" container_exited demo-kms
compose --profile kms-plugin logs --no-color demo-kms | sed 's/^/[e2e]    | /'
[[ $(exit_code demo-kms) == 0 ]] || fail "demo-kms job exited $(exit_code demo-kms)"
kms_seal_status() { curl -fsS --max-time 3 "http://127.0.0.1:$OPENBAO_KMS_PORT/v1/sys/seal-status" 2>/dev/null; }
kms_unsealed() { [[ "$(kms_seal_status)" == *'"sealed":false'* ]]; }
st=$(kms_seal_status) || fail "openbao-kms seal-status not reachable"
[[ $st == *'"initialized":true'* && $st == *'"sealed":false'* && $st == *'"type":"rootseal"'* ]] ||
    fail "openbao-kms is not initialised and unsealed by the rootseal KMS plugin: $st"
pass "openbao-kms initialised and unsealed; seal type rootseal (KMS plugin)"
compose --profile kms-plugin restart openbao-kms
wait_until 120 "openbao-kms unsealed after restart" kms_unsealed
pass "openbao-kms unsealed again through the KMS plugin after a restart"
assert_unsealed_via_rootseal
pass "the transit-sealed OpenBao is unaffected"

FAILED=0
