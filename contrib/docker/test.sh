#!/usr/bin/env bash
# End-to-end check of the container image, with docker or podman:
#   contrib/docker/test.sh              # base images pulled from a registry
#   LOCAL_BASE=1 contrib/docker/test.sh # no registry: podman, base images made here
# Builds the image from the Dockerfile, runs it, checks the health check,
# the version, a beat sent over UDP and read back over HTTP, stops the
# container (SIGTERM) and checks the database was saved in the volume.
#
# LOCAL_BASE=1 is for a machine that reaches Debian's mirror and the crate registry
# but no image registry (the CI machine): it makes the Dockerfile's two base
# images under their own names, debian:bookworm-slim from an mmdebstrap root
# filesystem and rust:1.95-slim-bookworm from that plus this machine's Rust
# 1.95 toolchain and its extra CA certificates (for a TLS-inspecting proxy).
# Needs podman and mmdebstrap (Debian packages), and takes about ten minutes,
# most of it the release build; CI lints the Dockerfile with hadolint instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${LOCAL_BASE:-0}" = 1 ]; then
    ENGINE=${ENGINE:-podman}
else
    ENGINE=${ENGINE:-$(command -v docker || command -v podman)}
fi
NAME=lovebeat-test-$$
VOLUME=lovebeat-test-data-$$
HTTP=${HTTP_PORT:-18080}
UDP=${UDP_PORT:-18127}
WORK=$(mktemp -d)

cleanup() {
    "$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
    "$ENGINE" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The Debian mirror this machine's apt uses (deb822 .sources first, then
# one-line .list entries), not the security archive.
debian_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
        grep -v security | head -n 1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
            sed -E 's/\[[^]]*\] *//' | awk '{print $2}' | grep -v security | head -n 1 || true)
    fi
    [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
    echo "$uri"
}

make_local_base_images() {
    rustc --version | grep -q '^rustc 1\.95\.' ||
        { echo "LOCAL_BASE needs Rust 1.95 here, found: $(rustc --version)" >&2; exit 1; }
    mmdebstrap --variant=apt --quiet bookworm "$WORK/bookworm.tar" "$(debian_mirror)"
    "$ENGINE" import "$WORK/bookworm.tar" docker.io/library/debian:bookworm-slim >/dev/null
    mkdir -p "$WORK/rust/cas"
    cp -a "$(rustc --print sysroot)" "$WORK/rust/toolchain"
    rm -rf "$WORK/rust/toolchain/share/doc"
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rust/cas/" 2>/dev/null || true
    cat >"$WORK/rust/Containerfile" <<'EOF'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY cas/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH CARGO_HOME=/usr/local/cargo
EOF
    "$ENGINE" build -q -t docker.io/library/rust:1.95-slim-bookworm "$WORK/rust" >/dev/null
    echo "base images made locally: debian:bookworm-slim, rust:1.95-slim-bookworm"
}

[ "${LOCAL_BASE:-0}" = 1 ] && make_local_base_images

REV=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# podman keeps HEALTHCHECK only in the docker image format.
FORMAT=()
[ "$(basename "$ENGINE")" = podman ] && FORMAT=(--format docker)
"$ENGINE" build "${FORMAT[@]}" --build-arg "LOVEBEAT_GIT_REV=$REV" -t lovebeat:test .
"$ENGINE" run --rm lovebeat:test --version | grep -q "(git $REV)"
echo "image built; lovebeat --version names $REV"

"$ENGINE" volume create "$VOLUME" >/dev/null
"$ENGINE" run -d --name "$NAME" -p "127.0.0.1:$HTTP:8080" -p "127.0.0.1:$UDP:8127/udp" \
    -v "$VOLUME:/var/lib/lovebeat" lovebeat:test >/dev/null

for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$HTTP/version" >/dev/null && break
    sleep 0.2
done
if [ "$(basename "$ENGINE")" = podman ]; then
    podman healthcheck run "$NAME" && echo "health check passes"
fi
echo "docker.test.beat:1|c" > "/dev/udp/127.0.0.1/$UDP"
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$HTTP/api/services/docker.test" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP/api/services/docker.test" | grep -q '"name": "docker.test"'
echo "beat received over UDP and read back over HTTP"

"$ENGINE" stop -t 30 "$NAME" >/dev/null
test "$("$ENGINE" inspect -f '{{.State.ExitCode}}' "$NAME")" = 0
echo "SIGTERM: exit status 0"
"$ENGINE" run --rm -v "$VOLUME:/data" --entrypoint /bin/sh lovebeat:test \
    -c 'zcat /data/lovebeat.db | grep -q "docker.test"'
echo "database saved in the volume on SIGTERM, with the service in it"
