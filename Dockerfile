# A conventional multi-stage build, for machines that can pull base images:
#
#   docker build -t raftgate .
#
# Where no registry is reachable, use docker/build-image.sh instead (a static binary in an image
# FROM scratch, nothing pulled). Both images run the same way: ENTRYPOINT /raftgate, default
# command `serve --config /etc/raftgate/raftgate.toml`, data in /var/lib/raftgate, so
# docker-compose.yml works with either one tagged raftgate:local.
#
# Builder and runtime are both Debian 12 (bookworm): the binary links the glibc it runs on.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Manifests first: the dependencies are fetched in a layer of their own, reused until
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY cluster/Cargo.toml cluster/
RUN mkdir -p src cluster/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs cluster/src/lib.rs \
    && cargo fetch --locked \
    && rm -rf src cluster/src
COPY . .
RUN cargo build --release --locked --bin raftgate \
    && strip --strip-debug -o /raftgate target/release/raftgate \
    && mkdir /data

# distroless/cc: glibc and libgcc, no shell; TLS roots are compiled into the binary.
FROM ${RUNTIME_IMAGE}
COPY --from=build /raftgate /raftgate
# The data directory, owned by nonroot (65532): a named volume mounted here inherits it.
COPY --from=build --chown=65532:65532 /data /var/lib/raftgate
USER 65532:65532
# proxy, admin, cluster
EXPOSE 8000 8001 8002
ENTRYPOINT ["/raftgate"]
CMD ["serve", "--config", "/etc/raftgate/raftgate.toml"]
