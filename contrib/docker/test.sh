#!/usr/bin/env bash
# End-to-end check of the container image, for a machine with docker or
# podman and access to the base images (CI has no registry, so it runs
# hadolint on the Dockerfile instead):
#   contrib/docker/test.sh            # uses docker, or podman if no docker
# Builds the image, runs it, sends a beat over UDP, reads it back over HTTP,
# stops the container (SIGTERM) and checks the database was saved in the
# volume.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${ENGINE:-$(command -v docker || command -v podman)}
NAME=lovebeat-test-$$
VOLUME=lovebeat-test-data-$$
HTTP=${HTTP_PORT:-18080}
UDP=${UDP_PORT:-18127}

cleanup() {
    "$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
    "$ENGINE" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$ENGINE" build -t lovebeat:test .
"$ENGINE" volume create "$VOLUME" >/dev/null
"$ENGINE" run -d --name "$NAME" -p "127.0.0.1:$HTTP:8080" -p "127.0.0.1:$UDP:8127/udp" \
    -v "$VOLUME:/var/lib/lovebeat" lovebeat:test >/dev/null

for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$HTTP/version" >/dev/null && break
    sleep 0.2
done
echo "docker.test.beat:1|c" > "/dev/udp/127.0.0.1/$UDP"
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$HTTP/api/services/docker.test" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP/api/services/docker.test" | grep -q '"name": "docker.test"'
echo "beat received over UDP and read back over HTTP"

"$ENGINE" stop -t 30 "$NAME" >/dev/null
"$ENGINE" run --rm -v "$VOLUME:/data" --entrypoint /bin/sh lovebeat:test \
    -c 'test -s /data/lovebeat.db' && echo "database saved in the volume on SIGTERM"
