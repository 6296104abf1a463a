# rootseal container image.
#
# Stages (file order matters for the classic builder, which builds every stage up to --target):
#   runtime-base      Debian bookworm-slim + SoftHSM2 (libsofthsm2, softhsm2-util), user `rootseal`
#   runtime-prebuilt  runtime-base + a binary built on the host at target/release/rootseal (CI):
#                       cargo build --release -p rootseal
#                       docker build --target runtime-prebuilt -t rootseal/rootseal:local .
#   build             Rust toolchain image; compiles rootseal from this checkout (needs crates.io)
#   runtime           runtime-base + the binary from `build` (the default target; what
#                     `docker compose up --build` uses on a machine with internet access)
#
# Nothing secret is baked in: config, PINs and tokens are mounted at run time (see
# docker-compose.yml and docs/docker.md).

ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime-base
# Packages are installed only when missing, so a base image that already carries them (the
# registry-less CI builds one with debootstrap) needs no mirror from inside the build.
RUN set -eu; \
    pkgs="ca-certificates curl libsofthsm2 softhsm2"; missing=""; \
    for p in $pkgs; do \
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    test -e /usr/lib/softhsm/libsofthsm2.so; \
    groupadd --gid 10001 rootseal; \
    useradd --uid 10001 --gid rootseal --home-dir /var/lib/rootseal --no-create-home \
        --shell /usr/sbin/nologin rootseal; \
    # Debian's softhsm2 keeps /var/lib/softhsm group-private to `softhsm`.
    if getent group softhsm >/dev/null; then usermod -a -G softhsm rootseal; fi; \
    mkdir -p /etc/rootseal /var/lib/rootseal/keys /var/lib/softhsm/tokens /run/secrets; \
    chown rootseal:rootseal /var/lib/rootseal /var/lib/rootseal/keys /var/lib/softhsm/tokens; \
    chmod 0750 /var/lib/rootseal /var/lib/rootseal/keys; \
    chmod 0770 /var/lib/softhsm/tokens
ENV SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf \
    ROOTSEAL_HEALTH_URL=http://127.0.0.1:8210/v1/sys/health
EXPOSE 8210
# 200 from /v1/sys/health means the HSM session pool is up and the L0 root was found.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null "$ROOTSEAL_HEALTH_URL" || exit 1
USER rootseal
WORKDIR /var/lib/rootseal
ENTRYPOINT ["rootseal"]
CMD ["serve", "--config", "/etc/rootseal/rootseal.toml"]

# ---------------------------------------------------------------------------------------------
FROM runtime-base AS runtime-prebuilt
# .dockerignore lets exactly this one file of target/ into the build context.
COPY target/release/rootseal /usr/local/bin/rootseal
# Fails the build if the binary cannot run on this base (glibc, missing libraries).
RUN rootseal --help >/dev/null

# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY hsm-backend hsm-backend
COPY bulk bulk
COPY vault-config vault-config
COPY plugin plugin
COPY tests tests
RUN cargo build --release --locked -p rootseal \
    && install -m 0755 target/release/rootseal /usr/local/bin/rootseal

# ---------------------------------------------------------------------------------------------
FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/rootseal /usr/local/bin/rootseal
# Fails the build if the binary cannot run on this base (glibc, missing libraries).
RUN rootseal --help >/dev/null
