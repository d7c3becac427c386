# syntax=docker/dockerfile:1
# The gateway in a small runtime image.
#   docker build -t browser-sip-gateway .
#   docker compose up            # with the fixture Kamailio, see docker-compose.yml

# --- build: the release binary, linked against the system libopus ---------------------
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopus-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BuildKit caches keep the registry and target/ between builds (the binary is copied out:
# a cache mount is not part of the image).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gateway \
 && install -m 0755 target/release/gateway /usr/local/bin/gateway

# --- runtime: libc6 and libgcc-s1 come with the base image; libopus0 is the one extra ----
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopus0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=builder /usr/local/bin/gateway /usr/local/bin/gateway
USER gateway:gateway
# The run contract's defaults, spelled out so the health check below knows the REST port.
ENV GATEWAY_WS_LISTEN=0.0.0.0:8081 \
    GATEWAY_API_LISTEN=0.0.0.0:8082 \
    GATEWAY_SIP_LISTEN=0.0.0.0:5070 \
    GATEWAY_RTP_PORTS=20000-29999
# WebSocket + demo page, REST, the gateway's SIP port, RTP/SRTP (--rtp-ports).
EXPOSE 8081/tcp 8082/tcp 5070/udp 5070/tcp 20000-29999/udp
# /api/health answers 200 while the SIP upstream answers OPTIONS (503 otherwise). No curl in
# the slim image: bash's /dev/tcp speaks the one plain-HTTP request (with --tls-cert set,
# override this check).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${GATEWAY_API_LISTEN##*:} && printf 'GET /api/health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM: BYE every call, unregister every DN, exit 0 within 5 s (docker stop waits 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway"]
