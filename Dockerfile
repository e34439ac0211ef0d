# One image with every TopGun binary. Build: docker build -t topgun .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && for b in topgun test-server gateway sync-service storage-service search-service; do cp target/release/$b /out/; done

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/topgun topgun
COPY --from=build /out/ /usr/local/bin/
COPY admin-dashboard /usr/share/topgun/admin-dashboard
ENV TOPGUN_DATA_DIR=/var/lib/topgun/data \
    TOPGUN_ADMIN_DIR=/usr/share/topgun/admin-dashboard \
    RUST_LOG=info
WORKDIR /var/lib/topgun
USER topgun
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:${PORT:-8080}/health/ready || exit 1
CMD ["topgun"]
