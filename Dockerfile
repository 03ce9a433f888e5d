# syntax=docker/dockerfile:1
# Herald image: herald-edge (entrypoint) and herald-demo, built in release mode.
#   docker build -t herald:dev .
#   docker run --rm -p 8080:8080 -e HERALD_NATS_URL=nats://host:4222 -e HERALD_JWT_SECRET=... herald:dev
#   docker run --rm --entrypoint herald-demo herald:dev run --nats-url nats://host:4222

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artifacts between builds (BuildKit);
# the binaries are copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald-edge -p herald-demo \
 && mkdir -p /out \
 && cp target/release/herald-edge target/release/herald-demo /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 herald \
 && useradd --system --uid 10001 --gid herald --no-create-home --shell /usr/sbin/nologin herald
COPY --from=builder /out/herald-edge /out/herald-demo /usr/local/bin/
USER 10001:10001
ENV HERALD_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["herald-edge"]
