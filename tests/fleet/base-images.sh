#!/usr/bin/env bash
# Local stand-ins for the public images docker/Dockerfile and docker/compose.yaml name, for a
# machine without a container registry (CI). Each is made once from Debian's own packages
# (debootstrap + `docker import`) and kept in the machine's image store; the fleet test passes
# their names to the build (build args) and to compose (environment). Users never need them.
#
#   buyonce-ci/debian:bookworm   for debian:bookworm-slim (the runtime stage)
#   buyonce-ci/rust:bookworm     for rust:<version>-slim-bookworm (the builder): the machine's own
#                                Rust toolchain (no other can be fetched here) + gcc
#   buyonce-ci/rabbitmq:4.0      for rabbitmq:4.0-management: Debian 13's rabbitmq-server 4.0.5
#   buyonce-ci/postgres:17       for postgres:17: Debian 13's postgresql-17 with an entrypoint
#                                that honours what compose uses of the official image's
#                                (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE)
#
# Usage: tests/fleet/base-images.sh [--rebuild]. Roots are kept under ~/.cache/buyonce/images.
set -euo pipefail
cd "$(dirname "$0")"
CACHE="${BUYONCE_IMAGE_CACHE:-$HOME/.cache/buyonce/images}"
MIRROR=http://deb.debian.org/debian
REBUILD="${1:-}"
mkdir -p "$CACHE"

have() { [ "$REBUILD" != --rebuild ] && docker image inspect "$1" >/dev/null 2>&1; }

# A minimal Debian root in $CACHE/$1 (release $2) with packages $3…, made once.
root() {
  local dir="$CACHE/$1" release="$2"
  shift 2
  if [ ! -e "$dir/.done" ] || [ "$REBUILD" = --rebuild ]; then
    echo "making $dir (Debian $release: $*)" >&2
    rm -rf "$dir"
    debootstrap --variant=minbase "$release" "$dir" "$MIRROR" >/dev/null
    # Nothing starts inside while packages install.
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod +x "$dir/usr/sbin/policy-rc.d"
    if [ $# -gt 0 ]; then
      cp /etc/resolv.conf "$dir/etc/resolv.conf"
      chroot "$dir" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
      chroot "$dir" apt-get clean
    fi
    rm -f "$dir/usr/sbin/policy-rc.d" "$dir/etc/resolv.conf"
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/tmp/* "$dir"/var/log/*.log
    touch "$dir/.done"
  fi
  echo "$dir"
}

# `docker import` of a root with image settings.
import() {
  local dir="$1" name="$2"
  shift 2
  tar --one-file-system --exclude=./.done -C "$dir" -c . | docker import "$@" - "$name" >/dev/null
  echo "made $name" >&2
}

if ! have buyonce-ci/debian:bookworm; then
  import "$(root bookworm bookworm)" buyonce-ci/debian:bookworm \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
fi

if ! have buyonce-ci/rust:bookworm; then
  dir="$(root rust-bookworm bookworm gcc libc6-dev ca-certificates)"
  # The toolchain where the official image has it: RUSTUP_HOME=/usr/local/rustup, cargo's
  # home (registry cache) /usr/local/cargo, its binaries on PATH.
  sysroot="$(rustc --print sysroot)"
  rm -rf "$dir/usr/local/rustup" "$dir/usr/local/cargo"
  mkdir -p "$dir/usr/local/rustup/toolchain" "$dir/usr/local/cargo/bin"
  tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$dir/usr/local/rustup/toolchain" -x
  for b in cargo rustc rustdoc; do
    ln -sf "/usr/local/rustup/toolchain/bin/$b" "$dir/usr/local/cargo/bin/$b"
  done
  import "$dir" buyonce-ci/rust:bookworm \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]'
fi

if ! have buyonce-ci/rabbitmq:4.0 || ! have buyonce-ci/postgres:17; then
  dir="$(root services-trixie trixie rabbitmq-server postgresql-17 ca-certificates curl)"
  # The official rabbitmq image reads /etc/rabbitmq/conf.d and enabled_plugins there too, and
  # runs the node as rabbitmq with its data in /var/lib/rabbitmq.
  rm -f "$dir/etc/rabbitmq/rabbitmq-env.conf"
  chroot "$dir" sh -c 'mkdir -p /etc/rabbitmq/conf.d /var/lib/rabbitmq /var/lib/postgresql/data &&
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq &&
    mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql &&
    chown -R postgres:postgres /var/lib/postgresql && chmod 700 /var/lib/postgresql/data'
  install -m 0755 postgres-entrypoint.sh "$dir/usr/local/bin/postgres-entrypoint"
  import "$dir" buyonce-ci/rabbitmq:4.0 \
    --change 'USER rabbitmq' \
    --change 'ENV HOME=/var/lib/rabbitmq LANG=C.UTF-8 PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'EXPOSE 5672 15672 15692' \
    --change 'CMD ["rabbitmq-server"]'
  import "$dir" buyonce-ci/postgres:17 \
    --change 'USER postgres' \
    --change 'ENV PGDATA=/var/lib/postgresql/data LANG=C.UTF-8 PATH=/usr/lib/postgresql/17/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'EXPOSE 5432' \
    --change 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]'
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^buyonce-ci/' >&2
