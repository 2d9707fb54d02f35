# stowage as a compose sidecar: a small Debian image with the stowage binary and the
# PostgreSQL client tools (pg_dump, pg_restore, psql) of the major version you choose.
#
#   docker build -t stowage .                          # client tools of PostgreSQL 17
#   docker build --build-arg PG_MAJOR=18 -t stowage .  # match your server's major (or newer)
#
# pg_dump refuses servers newer than itself, so PG_MAJOR must be at least the server's major
# version. The tools are copied from the official postgres image of that major version (the
# one the stack already runs), so no extra package repository is needed.
#
# Works with the classic builder (no BuildKit-only syntax). A binary placed at
# docker/prebuilt/stowage (for example a cross-compiled or CI-built one) is used as is;
# otherwise the builder stage compiles stowage.

ARG PG_MAJOR=17
ARG PG_IMAGE=postgres:${PG_MAJOR}-bookworm
ARG BUILDER_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY docker/prebuilt/ /prebuilt/
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN if [ -x /prebuilt/stowage ]; then cp /prebuilt/stowage /stowage; \
    else cargo build --release --locked && cp target/release/stowage /stowage; fi

FROM ${PG_IMAGE} AS pgclient
ARG PG_MAJOR
RUN mkdir -p /pgclient/bin /pgclient/lib \
 && for t in pg_dump pg_restore psql pg_isready; do \
        cp "/usr/lib/postgresql/${PG_MAJOR}/bin/$t" /pgclient/bin/; \
    done \
 && cp -L /usr/lib/*/libpq.so.5 /pgclient/lib/

FROM ${RUNTIME_IMAGE}
ARG PG_MAJOR
# libpq5 brings the client library's own dependencies (TLS, Kerberos, LDAP) and libreadline8
# psql's; libpq itself comes from the postgres image, matching the tools. tini runs as PID 1
# so signals reach stowage and pg_dump children are reaped; zstd is for by-hand restores.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libpq5 libreadline8 tini zstd \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/stowage --create-home stowage \
 && mkdir -p /config /var/backups/stowage /var/log/stowage \
 && chown stowage:stowage /var/backups/stowage /var/log/stowage
COPY --from=pgclient /pgclient/bin/ /usr/lib/postgresql/client/bin/
COPY --from=pgclient /pgclient/lib/ /usr/lib/postgresql/client/lib/
COPY --from=build /stowage /usr/local/bin/stowage
COPY config/compose.toml /config/stowage.toml
ENV PATH=/usr/lib/postgresql/client/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/usr/lib/postgresql/client/lib \
    STOWAGE_CONFIG=/config/stowage.toml \
    STOWAGE_PID_FILE=/tmp/stowage-daemon.pid \
    PG_MAJOR=${PG_MAJOR}
USER stowage
VOLUME ["/var/backups/stowage", "/var/log/stowage"]
# Healthy = the config is valid and the daemon is alive (see docker/README.md).
HEALTHCHECK --interval=60s --timeout=10s --start-period=20s --retries=3 CMD ["stowage", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["stowage", "daemon"]
