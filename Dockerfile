# lovebeat container image.
#   docker build -t lovebeat .
#   docker run -p 8080:8080 -p 8127:8127/tcp -p 8127:8127/udp \
#     -v lovebeat-data:/var/lib/lovebeat lovebeat
# Config: mount a file at /etc/lovebeat.cfg (defaults apply without one).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY ui ./ui
COPY loadtest ./loadtest
COPY autotrace ./autotrace
COPY benches ./benches
# The build has no .git: `lovebeat --version` names the revision given here
# (contrib/docker/test.sh passes `git rev-parse --short=12 HEAD`).
ARG LOVEBEAT_GIT_REV=unknown
RUN cargo build --release --locked --bin lovebeat

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=* \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lovebeat \
    && useradd --system --uid 10001 --gid lovebeat --home-dir /var/lib/lovebeat --shell /usr/sbin/nologin lovebeat \
    && install -d -o lovebeat -g lovebeat /var/lib/lovebeat
COPY --from=build /src/target/release/lovebeat /usr/local/bin/lovebeat
USER 10001:10001
WORKDIR /var/lib/lovebeat
VOLUME ["/var/lib/lovebeat"]
EXPOSE 8080 8127/tcp 8127/udp
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["lovebeat", "ping", "--server", "http://127.0.0.1:8080"]
# lovebeat is PID 1: it handles SIGTERM itself and saves the database
# before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lovebeat"]
