#!/usr/bin/env bash
# The quick part of test.sh, for CI: the files the Dockerfile's build stage
# copies from the context are enough to build lovebeat, so a file the build
# needs but the Dockerfile forgets fails CI in a minute, not a ten-minute
# image build later. Builds in a directory that holds only what those COPY
# lines copy, reusing this checkout's target directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# COPY lines of the first stage that copy from the build context.
awk '/^FROM /{stage++} stage == 1 && /^COPY / && !/--from=/' Dockerfile |
while read -r _ args; do
    read -r -a parts <<<"$args"
    dest=${parts[-1]}
    unset 'parts[-1]'
    mkdir -p "$ctx/$dest"
    for src in "${parts[@]}"; do
        if [[ -d $src ]]; then
            cp -r "$src/." "$ctx/$dest/"
        else
            cp "$src" "$ctx/$dest/"
        fi
    done
done
# The same packages and profile as ./test's `cargo build -p lovebeat -p loadtest`
# just before, so only the two crates themselves compile again.
(cd "$ctx" && cargo build --quiet --locked --offline -p lovebeat -p loadtest --target-dir "$repo/target")
echo "the Dockerfile's build context compiles: $(cd "$ctx" && find . -type f | wc -l) files"
