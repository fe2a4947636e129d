# syntax=docker/dockerfile:1
# The `weir` binary in a small Debian image, running as a non-root user (uid/gid 10001).
#
#   docker build -t weir:0.1.0 .
#   docker run --rm -p 4317:4317 -p 4318:4318 -p 8686:8686 weir:0.1.0 run
#
# Stage 1 builds with the workspace's release profile, which carries no debug info (see
# [profile.release] in Cargo.toml). The build and runtime images share a Debian release, so
# the binary finds the glibc it was linked against. Needs BuildKit (the default builder of
# current Docker) for the cache mounts. docs/operations.md, "Container image", says more.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p weir-agent --bin weir \
    && install -D -m 0755 target/release/weir /out/weir

FROM ${RUNTIME_IMAGE}
# CA certificates for TLS to object stores and the Kubernetes API.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 weir \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/weir --no-create-home \
       --shell /usr/sbin/nologin weir \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/weir
COPY --from=build /out/weir /usr/local/bin/weir
USER 10001:10001
WORKDIR /var/lib/weir
# OTLP gRPC, OTLP HTTP, admin (health, metrics), control-plane API.
EXPOSE 4317 4318 8686 8700
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run"]
