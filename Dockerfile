# Kubernaut's container image: `docker build -t kubernaut .` from the repository root.
# The build stage compiles the release binary; the runtime stage is Debian slim with the
# two libraries the binary links dynamically (libpq for PostgreSQL, CA certificates for
# TLS to API servers and registries), running as a non-root user. The web UI's
# templates, stylesheet and scripts, the default settings and the SQL migrations are
# compiled into the binary: there are no other files to copy.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev=15.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --package kubernaut \
 && install -D -m 0755 target/release/kubernaut /out/kubernaut

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=2023* libpq5=15.* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 kubernaut \
 && useradd --system --uid 65532 --gid kubernaut --home-dir /var/lib/kubernaut \
      --shell /usr/sbin/nologin kubernaut \
 && install -d -o kubernaut -g kubernaut -m 0700 /var/lib/kubernaut
COPY --from=build /out/kubernaut /usr/local/bin/kubernaut
USER 65532:65532
# mimalloc hands freed memory back to the system at once instead of a second later,
# and commits its arenas as it uses them: under a burst of 1,000 deploys Kubernaut's
# peak RSS was 285 MiB with mimalloc's defaults and 191 MiB with these, for 6.2
# instead of 5.5 ms of CPU per deploy (docs/performance.md, issue 17).
ENV KUBERNAUT__SERVER__BIND=0.0.0.0:8080 \
    KUBERNAUT_DATA_DIR=/var/lib/kubernaut \
    MIMALLOC_PURGE_DELAY=0 \
    MIMALLOC_ARENA_EAGER_COMMIT=0
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubernaut"]
CMD ["serve"]
