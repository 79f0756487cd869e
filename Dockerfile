# syntax=docker/dockerfile:1
#
# allot's container image: the release build of the one binary (server, migrations, CLI) on
# distroless (glibc, CA certificates, no shell, no package manager), running as uid 65532.
#
# NOT BUILT HERE: the machine this project is developed and tested on has the docker client but
# no Docker daemon, so this file has never been built by CI. It is kept minimal so that it can be
# checked by reading. Build it where a daemon (BuildKit) runs:
#
#   docker build -t allot:0.1.0 .
#   docker run --rm -p 50051:50051 -e DATABASE_URL=postgres://… -e ALLOT_JWT_HS256_SECRET=… allot:0.1.0
#
# The build needs no protoc (protos are compiled by protox) and no OpenSSL (rustls
# everywhere); the C parts (SQLite, ring, mimalloc) use the builder's gcc. Builder and runtime
# are both Debian 12 (bookworm), so the binary's glibc matches.

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are cache mounts (kept between builds, not in the
# image), so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin allot \
 && install -m 0755 target/release/allot /allot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /allot /usr/local/bin/allot
USER 65532:65532
ENV ALLOT_LISTEN=0.0.0.0:50051
# gRPC (and health, reflection); Prometheus metrics when ALLOT_METRICS_LISTEN=0.0.0.0:9090.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/allot"]
CMD ["serve"]
