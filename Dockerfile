# stowage as a compose sidecar: an image FROM scratch holding the stowage binary, the client
# tools of the databases it backs up and exactly the files they need to run. Everything is
# assembled in a Debian 12 stage (packages installed there, then only the binaries and the
# shared libraries they load copied out), so the image has no package manager, no perl and
# no Debian base underneath.
#
#   PostgreSQL  pg_dump, pg_restore, psql, pg_isready, pg_basebackup, pg_receivewal (of the major version you choose)
#   MariaDB     mariadb-dump, mariadb (also as mysqldump, mysql): Debian 12's 10.11 client
#   Redis       redis-cli (Debian 12's 7.0)
#   SQLite      nothing: stowage reads SQLite files itself
#   MongoDB     mongodump, mongorestore: only when built with MONGODB_TOOLS_DEB (below)
#   always      tini (PID 1), BusyBox (/bin/sh and the usual commands: cat, ls, grep, gzip,
#               ...), zstd, CA certificates, ssh (OpenSSH's client, for SFTP destinations)
#
#   docker build -t stowage .                                   # all three clients, PostgreSQL 17's
#   docker build --build-arg PG_MAJOR=18 -t stowage .           # match your server's major (or newer)
#   docker build --build-arg CLIENTS=postgres -t stowage .      # only the PostgreSQL client
#   docker build --build-arg CLIENTS="postgres redis" -t stowage .
#
# CLIENTS lists the clients to include, any of: postgres mariadb redis (separated by spaces or
# commas; default: all three). An unknown name fails the build.
#
# pg_dump refuses servers newer than itself, so PG_MAJOR must be at least the server's major
# version. The tools are copied from the official postgres image of that major version (the
# one the stack already runs), so no extra package repository is needed.
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
# Only mongodump and mongorestore are kept, plus the libraries they load.
#
# Works with the classic builder (no BuildKit-only syntax). A binary placed at
# docker/prebuilt/stowage (for example a cross-compiled or CI-built one) is used as is;
# otherwise the builder stage compiles stowage. RUNTIME_IMAGE is the Debian 12 image the
# files are taken from (the image itself is FROM scratch).

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
 && for t in pg_dump pg_restore psql pg_isready pg_basebackup pg_receivewal; do \
        cp "/usr/lib/postgresql/${PG_MAJOR}/bin/$t" /pgclient/bin/; \
    done \
 && cp -L /usr/lib/*/libpq.so.5 /pgclient/lib/

# Always built (the classic builder builds every stage), so it must cost nothing when
# MONGODB_TOOLS_DEB is empty. The package's Depends travel with the binaries so that the
# assembling stage installs them: the libraries the tools load are then found there.
FROM ${RUNTIME_IMAGE} AS mongotools
ARG MONGODB_TOOLS_DEB=""
ARG MONGODB_TOOLS_SHA256=""
COPY docker/prebuilt/ /prebuilt/
RUN set -eu; \
    mkdir -p /mongo/bin; \
    : > /mongo/depends; \
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
    cp /tmp/mongodb-tools/usr/bin/mongodump /tmp/mongodb-tools/usr/bin/mongorestore /mongo/bin/; \
    dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$' \
        > /mongo/depends || true

# The image's files, assembled under /rootfs. Every client package is installed here whatever
# CLIENTS says (so that the variants share this layer); only the chosen clients' binaries are
# copied out, each with the shared libraries ldd says it loads (which fails the build when one
# is missing). libpq5 and libreadline8 bring the libraries of the postgres image's libpq
# (TLS, Kerberos, LDAP) and psql; libpq itself comes from the postgres image, matching the
# tools. The MariaDB client's auth plugins (caching_sha2_password for MySQL 8, ed25519, ...)
# are loaded at run time from a fixed multiarch directory, so they and their libraries go
# along too.
FROM ${RUNTIME_IMAGE} AS rootfs
RUN apt-get update \
 && apt-get install -y --no-install-recommends busybox ca-certificates openssh-client tini zstd \
        libpq5 libreadline8 mariadb-client redis-tools \
 && rm -rf /var/lib/apt/lists/*
COPY --from=pgclient /pgclient/ /pgclient/
COPY --from=mongotools /mongo/ /mongo/
RUN set -eu; \
    if [ -s /mongo/depends ]; then \
        apt-get update; \
        xargs -a /mongo/depends apt-get install -y --no-install-recommends; \
        rm -rf /var/lib/apt/lists/*; \
    fi
# stowage goes into the tree only to take its libraries along and to run it there with the
# clients; it is removed after, and the image gets it in a layer of its own (so that a new
# stowage binary leaves the layer of everything else unchanged, cached and already pulled).
COPY --from=build /stowage /stowage
ARG CLIENTS="postgres mariadb redis"
RUN set -eu; \
    CLIENTS=$(echo "$CLIENTS" | tr ',' ' '); \
    for c in $CLIENTS; do case "$c" in postgres|mariadb|redis) ;; \
        *) echo "CLIENTS: unknown client \"$c\"; choose among: postgres mariadb redis" >&2; exit 1 ;; esac; done; \
    has() { case " $CLIENTS " in *" $1 "*) return 0 ;; esac; return 1; }; \
    R=/rootfs; \
    libdir=$(ldd /usr/bin/tini | awk '$1 == "libc.so.6" { sub(/\/[^\/]*$/, "", $3); print $3 }'); \
    [ -d "$libdir" ] || { echo "cannot find the multiarch library directory" >&2; exit 1; }; \
    mkdir -p $R/usr/bin $R/usr/sbin $R/usr/lib $R/usr/local/bin $R/etc/ssl/certs $R/usr/lib/ssl \
        $R/config $R/root $R/run $R/tmp $R/var/backups/stowage $R/var/log/stowage $R/var/lib/stowage/wal; \
    for d in bin sbin lib lib32 lib64 libx32; do \
        if [ -L /$d ]; then cp -P /$d $R/$d; mkdir -p "$R/$(readlink /$d)"; \
        elif [ -d /$d ]; then mkdir -p $R/$d; fi; \
    done; \
    put() { mkdir -p "$(dirname "$R$2")"; cp -L --preserve=mode "$1" "$R$2"; }; \
    : > /tmp/bins; \
    bin() { put "$1" "$2"; echo "$1" >> /tmp/bins; }; \
    bin /usr/bin/tini /usr/bin/tini; \
    bin /bin/busybox /usr/bin/busybox; \
    bin /usr/bin/zstd /usr/bin/zstd; \
    bin /usr/bin/ssh /usr/bin/ssh; \
    bin /stowage /usr/local/bin/stowage; \
    if has postgres; then \
        for t in pg_dump pg_restore psql pg_isready pg_basebackup pg_receivewal; do bin /pgclient/bin/$t /usr/lib/postgresql/client/bin/$t; done; \
    fi; \
    if has mariadb; then \
        bin /usr/bin/mariadb /usr/bin/mariadb; \
        bin /usr/bin/mariadb-dump /usr/bin/mariadb-dump; \
        ln -s mariadb $R/usr/bin/mysql; \
        ln -s mariadb-dump $R/usr/bin/mysqldump; \
        for p in "$libdir"/libmariadb3/plugin/*.so; do bin "$p" "$p"; done; \
    fi; \
    if has redis; then bin /usr/bin/redis-cli /usr/bin/redis-cli; fi; \
    for t in mongodump mongorestore; do \
        if [ -e /mongo/bin/$t ]; then bin /mongo/bin/$t /usr/bin/$t; fi; \
    done; \
    : > /tmp/libs; \
    while read -r f; do \
        out=$(LD_LIBRARY_PATH=/pgclient/lib ldd "$f" 2>&1) || case "$out" in \
            *"not a dynamic executable"*) continue ;; \
            *) echo "ldd $f: $out" >&2; exit 1 ;; \
        esac; \
        case "$out" in *"not found"*) echo "$f needs a library this build lacks:" >&2; echo "$out" >&2; exit 1 ;; esac; \
        echo "$out" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' >> /tmp/libs; \
    done < /tmp/bins; \
    for l in $(sort -u /tmp/libs); do \
        case "$l" in /pgclient/lib/*) put "$l" "$libdir/${l##*/}" ;; *) put "$l" "$l" ;; esac; \
    done; \
    for a in $(/bin/busybox --list-full | grep -E '^(usr/)?bin/'); do \
        [ -e "$R/$a" ] || [ -L "$R/$a" ] || ln -s /usr/bin/busybox "$R/$a"; \
    done; \
    put /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt; \
    ln -s /etc/ssl/certs $R/usr/lib/ssl/certs; \
    ln -s certs/ca-certificates.crt $R/usr/lib/ssl/cert.pem; \
    if [ -e "$R$libdir/libtinfo.so.6" ]; then cp -a /lib/terminfo $R/usr/lib/; fi; \
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'stowage:x:10001:10001:stowage:/var/lib/stowage:/bin/sh' > $R/etc/passwd; \
    printf '%s\n' 'root:x:0:' 'stowage:x:10001:' > $R/etc/group; \
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' > $R/etc/nsswitch.conf; \
    chmod 700 $R/root; \
    chmod 1777 $R/tmp; \
    chown 10001:10001 $R/var/backups/stowage $R/var/log/stowage $R/var/lib/stowage $R/var/lib/stowage/wal; \
    # The WAL spool's mount point (STOWAGE_WAL_DIR): a new named volume takes this owner and
    # mode, so the unprivileged daemon can write it and nobody else can read the WAL.
    chmod 700 $R/var/lib/stowage/wal; \
    in_image() { env -i HOME=/var/lib/stowage PATH=/usr/lib/postgresql/client/bin:/usr/local/bin:/usr/bin:/bin \
        /usr/sbin/chroot --userspec=10001:10001 $R "$@"; }; \
    in_image stowage --version; \
    in_image tini --version; \
    in_image zstd --version; \
    in_image sh -c 'echo ok | gzip | zcat | grep -qx ok && id -un | grep -qx stowage && ls / | grep -qx tmp'; \
    if has postgres; then for t in pg_dump pg_restore psql pg_isready pg_basebackup pg_receivewal; do in_image $t --version; done; fi; \
    if has mariadb; then for t in mariadb-dump mariadb mysqldump mysql; do in_image $t --version; done; fi; \
    if has redis; then in_image redis-cli --version; fi; \
    for t in mongodump mongorestore; do if [ -e $R/usr/bin/$t ]; then in_image $t --version; fi; done; \
    rm $R/usr/local/bin/stowage

FROM scratch
ARG PG_MAJOR
COPY --from=rootfs /rootfs/ /
# Owned by root, as every other file the process only reads: a compromised daemon cannot
# replace its own binary.
COPY --from=build /stowage /usr/local/bin/stowage
COPY config/compose.toml /config/stowage.toml
# GLIBC_TUNABLES: glibc keeps the stacks of exited threads for reuse, up to 40 MiB, each with
# 8-24 KiB still resident; each backup's runtime starts and ends its own threads, so an idle
# daemon held ~100 KiB of dead stacks (bench/README.md, "Idle footprint"). Unmapped at exit
# instead; a thread start then costs one mmap. glibc.malloc.tcache_count=0: each thread also
# keeps up to 7 freed blocks of each small size for itself, which an idle daemon carried
# (~440 KiB, that malloc_trim cannot return) long after the work that freed them; without
# that cache a backup measured the same speed and CPU within noise, with a lower peak
# (bench/README.md, "Point-in-time recovery").
ENV PATH=/usr/lib/postgresql/client/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    STOWAGE_CONFIG=/config/stowage.toml \
    STOWAGE_PID_FILE=/tmp/stowage-daemon.pid \
    GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0:glibc.malloc.tcache_count=0 \
    PG_MAJOR=${PG_MAJOR}
USER stowage
VOLUME ["/var/backups/stowage", "/var/log/stowage"]
# Healthy = the config is valid and the daemon is alive (see docker/README.md).
HEALTHCHECK --interval=60s --timeout=10s --start-period=20s --retries=3 CMD ["stowage", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["stowage", "daemon"]
