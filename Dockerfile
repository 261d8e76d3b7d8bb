# The volume-syncing-operator image: the static binary, rclone and CA certificates on an empty
# base (no shell, no package manager), running as the unprivileged uid 65312.
#
#   docker build -t volume-syncing-operator .   with registry access: compiles from source
#   make image                                  offline: local base images and a prebuilt binary
#
# Build arguments (base images):
#   RCLONE_IMAGE   provides /usr/local/bin/rclone and /etc/ssl/certs/ca-certificates.crt
#   BUILDER_IMAGE  compiles the binary; only needs a POSIX sh when the build context holds a
#                  prebuilt static binaries prebuilt/volume-syncing-operator and
#                  prebuilt/volume-syncing-operator-webhook (the operator), as `make image`
#                  stages them, and Rust with the musl target otherwise
ARG RCLONE_IMAGE=rclone/rclone:1.75.2
ARG BUILDER_IMAGE=rust:1.95-alpine

FROM ${RCLONE_IMAGE} AS rclone

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
# musl-dev (the C runtime for build scripts) follows the base image's Alpine release, so it is
# not pinned separately.
# hadolint ignore=DL3018
RUN set -eu; \
    if [ -f prebuilt/volume-syncing-operator ]; then \
        echo "using the prebuilt binary from the build context"; \
        cp prebuilt/volume-syncing-operator /volume-syncing-operator; \
        cp prebuilt/volume-syncing-operator-webhook /volume-syncing-operator-webhook; \
    else \
        apk add --no-cache musl-dev; \
        rustup target add x86_64-unknown-linux-musl; \
        cargo build --locked --release --target x86_64-unknown-linux-musl --no-default-features; \
        cp target/x86_64-unknown-linux-musl/release/volume-syncing-operator /volume-syncing-operator; \
        cargo build --locked --release --target x86_64-unknown-linux-musl --target-dir target/operator; \
        cp target/operator/x86_64-unknown-linux-musl/release/volume-syncing-operator /volume-syncing-operator-webhook; \
    fi; \
    mkdir -p /rootfs/data /rootfs/etc /rootfs/tmp /rootfs/usr/local/bin; \
    cp /volume-syncing-operator /rootfs/usr/local/bin/volume-syncing-operator; \
    cp /volume-syncing-operator-webhook /rootfs/usr/local/bin/volume-syncing-operator-webhook; \
    chmod 0755 /rootfs/usr/local/bin/volume-syncing-operator /rootfs/usr/local/bin/volume-syncing-operator-webhook; \
    /rootfs/usr/local/bin/volume-syncing-operator --version; \
    chmod 1777 /rootfs/tmp; \
    chown 65312:65312 /rootfs/data; \
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'vso:x:65312:65312:volume-syncing-operator:/tmp:/sbin/nologin' > /rootfs/etc/passwd; \
    printf '%s\n' 'root:x:0:' 'vso:x:65312:' > /rootfs/etc/group

FROM scratch
LABEL org.opencontainers.image.title="volume-syncing-operator" \
      org.opencontainers.image.description="Keeps a directory and an rclone remote in sync, with safety valves that refuse to wipe data" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rootfs/ /
COPY --from=rclone /usr/local/bin/rclone /usr/local/bin/rclone
COPY --from=rclone /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# /tmp (1777) holds the private rclone.conf and the PID file; with a read-only root file system
# mount a tmpfs or emptyDir there. /data (empty, owned by 65312) is the conventional mount point:
# a new named Docker volume mounted there starts out owned by 65312, so a restore can write it.
ENV TMPDIR=/tmp \
    PATH=/usr/local/bin
USER 65312
ENTRYPOINT ["/usr/local/bin/volume-syncing-operator"]
CMD ["--help"]
