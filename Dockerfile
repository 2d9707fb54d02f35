# stowage as a compose sidecar: a small Debian image with the stowage binary and the client
# tools of the databases it backs up.
#
#   PostgreSQL  pg_dump, pg_restore, psql, pg_isready (of the major version you choose)
#   MariaDB     mariadb-dump, mariadb (also as mysqldump, mysql): Debian 12's 10.11 client
#   Redis       redis-cli (Debian 12's 7.0)
#   SQLite      nothing: stowage reads SQLite files itself
#   MongoDB     mongodump, mongorestore: only when built with MONGODB_TOOLS_DEB (below)
#
#   docker build -t stowage .                          # client tools of PostgreSQL 17
#   docker build --build-arg PG_MAJOR=18 -t stowage .  # match your server's major (or newer)
#
# pg_dump refuses servers newer than itself, so PG_MAJOR must be at least the server's major
# version. The tools are copied from the official postgres image of that major version (the
# one the stack already runs), so no extra package repository is needed.
#
# Only the MariaDB and Redis client binaries (and the libraries they link) are copied in, not
# their packages: mariadb-client alone is 64 MB and pulls in perl for scripts stowage never runs.
#
# MongoDB's tools are not in Debian, so they cannot come from the apt mirror the rest does;
# they are large too, and most stacks have no MongoDB. To include them, supply the
# mongodb-database-tools .deb for Debian 12 from MongoDB's download centre (the one for the
# image's architecture), either dropped into docker/prebuilt/ or as a URL:
#
#   docker build --build-arg MONGODB_TOOLS_DEB=docker/prebuilt/mongodb-database-tools-debian12-x86_64-100.10.0.deb -t stowage .
#   docker build --build-arg MONGODB_TOOLS_DEB=<URL of the .deb> \
#                --build-arg MONGODB_TOOLS_SHA256=<its sha256, from the download centre> -t stowage .
#
# Only mongodump and mongorestore are kept, plus the libraries the package depends on.
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
# .cargo/config.toml compiles SQLite with the page reader the sqlite engine's snapshot uses.
COPY .cargo ./.cargo
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

# The packages are installed here, where perl and the rest can stay behind. The client auth
# plugins (caching_sha2_password for MySQL 8, ed25519, ...) are loaded from a fixed
# multiarch directory, so the tree under /dbclients mirrors the paths it must land on.
FROM ${RUNTIME_IMAGE} AS dbclients
RUN apt-get update \
 && apt-get install -y --no-install-recommends mariadb-client redis-tools \
 && mkdir -p /dbclients/usr/bin \
 && cp /usr/bin/mariadb /usr/bin/mariadb-dump /usr/bin/redis-cli /dbclients/usr/bin/ \
 && ln -s mariadb /dbclients/usr/bin/mysql \
 && ln -s mariadb-dump /dbclients/usr/bin/mysqldump \
 && for d in /usr/lib/*/libmariadb3/plugin; do \
        mkdir -p "/dbclients$d" && cp -a "$d/." "/dbclients$d/"; \
    done

# Always built (the classic builder builds every stage), so it must cost nothing when
# MONGODB_TOOLS_DEB is empty. The package's Depends travel with the binaries so that the
# runtime stage installs exactly those libraries, whichever tools version is supplied.
FROM ${RUNTIME_IMAGE} AS mongotools
ARG MONGODB_TOOLS_DEB=""
ARG MONGODB_TOOLS_SHA256=""
COPY docker/prebuilt/ /prebuilt/
RUN set -eu; \
    mkdir -p /mongo/usr/bin /mongo/usr/local/share/stowage; \
    : > /mongo/usr/local/share/stowage/mongodb-tools.depends; \
    [ -n "$MONGODB_TOOLS_DEB" ] || exit 0; \
    deb=/tmp/mongodb-database-tools.deb; \
    case "$MONGODB_TOOLS_DEB" in \
        http://*|https://*) \
            apt-get update; \
            apt-get install -y --no-install-recommends ca-certificates curl; \
            curl -fsSL --retry 3 -o "$deb" "$MONGODB_TOOLS_DEB" ;; \
        *) \
            src="/prebuilt/${MONGODB_TOOLS_DEB#docker/prebuilt/}"; \
            [ -f "$src" ] || { echo "MONGODB_TOOLS_DEB=$MONGODB_TOOLS_DEB: no such file in docker/prebuilt/ (the part of the build context this stage sees); put the .deb there or give a URL" >&2; exit 1; }; \
            cp "$src" "$deb" ;; \
    esac; \
    if [ -n "$MONGODB_TOOLS_SHA256" ]; then echo "$MONGODB_TOOLS_SHA256  $deb" | sha256sum -c -; fi; \
    pkg=$(dpkg-deb -f "$deb" Package); \
    [ "$pkg" = mongodb-database-tools ] || { echo "MONGODB_TOOLS_DEB: package is \"$pkg\", want mongodb-database-tools" >&2; exit 1; }; \
    arch=$(dpkg-deb -f "$deb" Architecture); \
    [ "$arch" = "$(dpkg --print-architecture)" ] || { echo "MONGODB_TOOLS_DEB: the .deb is for $arch, the image is $(dpkg --print-architecture)" >&2; exit 1; }; \
    dpkg-deb -x "$deb" /tmp/mongodb-tools; \
    cp /tmp/mongodb-tools/usr/bin/mongodump /tmp/mongodb-tools/usr/bin/mongorestore /mongo/usr/bin/; \
    dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$' \
        > /mongo/usr/local/share/stowage/mongodb-tools.depends || true

FROM ${RUNTIME_IMAGE}
ARG PG_MAJOR
# libpq5 brings the client library's own dependencies (TLS, Kerberos, LDAP) and libreadline8
# psql's; libpq itself comes from the postgres image, matching the tools. Both MariaDB tools
# carry the client library inside and need libssl3 and zlib; mariadb also libedit2 and
# libncurses6. redis-cli needs libjemalloc2, liblzf1 and libatomic1 (and libsystemd0, which
# the base image has). tini runs as PID 1 so signals reach stowage and dump children are
# reaped; zstd is for by-hand restores.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libpq5 libreadline8 \
        libssl3 zlib1g libedit2 libncurses6 libjemalloc2 liblzf1 libatomic1 tini zstd \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/stowage --create-home stowage \
 && mkdir -p /config /var/backups/stowage /var/log/stowage \
 && chown stowage:stowage /var/backups/stowage /var/log/stowage
COPY --from=pgclient /pgclient/bin/ /usr/lib/postgresql/client/bin/
COPY --from=pgclient /pgclient/lib/ /usr/lib/postgresql/client/lib/
COPY --from=dbclients /dbclients/ /
COPY --from=mongotools /mongo/ /
ENV PATH=/usr/lib/postgresql/client/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/usr/lib/postgresql/client/lib \
    STOWAGE_CONFIG=/config/stowage.toml \
    STOWAGE_PID_FILE=/tmp/stowage-daemon.pid \
    PG_MAJOR=${PG_MAJOR}
# MongoDB's libraries, when its tools are in; then every client runs once, so that a missing
# library fails the build rather than the first backup.
RUN set -eu; \
    depends=/usr/local/share/stowage/mongodb-tools.depends; \
    if [ -s "$depends" ]; then \
        apt-get update; \
        xargs -a "$depends" apt-get install -y --no-install-recommends; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \
    fi; \
    rm -rf /usr/local/share/stowage; \
    for t in pg_dump pg_restore psql mariadb-dump mariadb redis-cli; do "$t" --version > /dev/null; done; \
    if [ -e /usr/bin/mongodump ]; then mongodump --version; mongorestore --version; fi
COPY --from=build /stowage /usr/local/bin/stowage
COPY config/compose.toml /config/stowage.toml
USER stowage
VOLUME ["/var/backups/stowage", "/var/log/stowage"]
# Healthy = the config is valid and the daemon is alive (see docker/README.md).
HEALTHCHECK --interval=60s --timeout=10s --start-period=20s --retries=3 CMD ["stowage", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["stowage", "daemon"]
