#!/usr/bin/env bash
# Builds the local test images proxima-learner:test, proxima-actor:test and proxima-prometheus:test without
# pulling anything (no registry needed): the release binaries are built on the host, then each image is
# `FROM scratch` plus a staged root filesystem with the binaries, exactly the shared libraries `ldd` lists and the
# dynamic loader, /etc/passwd and /etc/group (user `proxima`, uid/gid 10001; `nobody`), CA certificates and the
# configs. See deploy/test/Dockerfile for the stages; they mirror the runtime stage of deploy/Dockerfile.
#
# Idempotent and fast when nothing changed: the staged context is hashed and the build is skipped when all three
# images already carry that hash in their `proxima.test.inputs` label.
#
# Environment:
#   PROXIMA_BIN_DIR      directory holding already built `learner` and `actor` binaries (skips `cargo build`)
#   PROMETHEUS_BIN       the prometheus binary (default: `prometheus` on PATH; Debian: apt-get install prometheus)
#   PROXIMA_IMAGE_TAG    tag of the three images (default: test)
#   PROXIMA_IMAGE_WORK   staging directory (default: <cargo target dir>/docker-test-images)
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TAG=${PROXIMA_IMAGE_TAG:-test}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")
WORK=${PROXIMA_IMAGE_WORK:-$TARGET_DIR/docker-test-images}
LABEL=proxima.test.inputs

die() {
  echo "build-images.sh: $*" >&2
  exit 1
}

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running, may this user use it?)"

mkdir -p "$WORK"
# One build at a time per staging directory (concurrent test runs share it).
exec 9>"$WORK/.lock"
flock -w 900 9 || die "timed out waiting for another build-images.sh"

if [[ -n ${PROXIMA_BIN_DIR:-} ]]; then
  BIN_DIR=$PROXIMA_BIN_DIR
else
  echo "== cargo build --release -p proxima-cli"
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --locked -p proxima-cli)
  BIN_DIR=$TARGET_DIR/release
fi
for b in learner actor; do
  [[ -x $BIN_DIR/$b ]] || die "no executable $BIN_DIR/$b"
done
PROMETHEUS_BIN=${PROMETHEUS_BIN:-$(command -v prometheus || true)}
[[ -n $PROMETHEUS_BIN && -x $PROMETHEUS_BIN ]] ||
  die "prometheus not found (Debian/Ubuntu: apt-get install -y prometheus; or set PROMETHEUS_BIN)"

CTX=$WORK/context
rm -rf "$CTX"
mkdir -p "$CTX/proxima" "$CTX/prometheus" "$CTX/empty"
cp "$ROOT/deploy/test/Dockerfile" "$CTX/Dockerfile"

# add_elf ROOTFS BINARY DEST: the executable at DEST plus every shared library `ldd` lists and the loader, each at
# the path ldd resolved it to (symlinks followed).
add_elf() {
  local rootfs=$1 bin=$2 dest=$3 out lib
  install -D -m 0755 "$bin" "$rootfs$dest"
  if ! out=$(ldd "$bin" 2>&1); then
    [[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]] && return 0
    die "ldd $bin failed: $out"
  fi
  [[ $out != *"not found"* ]] || die "$bin needs libraries this host lacks: $out"
  while read -r lib; do
    [[ -n $lib ]] || continue
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
}

# Users and groups: root, the proxima service user (10001) and nobody (65534, prometheus).
add_accounts() {
  local rootfs=$1
  mkdir -p "$rootfs/etc"
  cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
proxima:x:10001:10001:proxima:/data:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
  cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
proxima:x:10001:
nogroup:x:65534:
EOF
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  install -d -m 1777 "$rootfs/tmp"
}

# learner + actor (one runtime, two entrypoints, as in deploy/Dockerfile).
P=$CTX/proxima
add_elf "$P" "$BIN_DIR/learner" /usr/local/bin/learner
add_elf "$P" "$BIN_DIR/actor" /usr/local/bin/actor
add_accounts "$P"
mkdir -p "$P/etc/proxima/configs"
cp "$ROOT"/configs/*.toml "$P/etc/proxima/configs/"
chmod 0644 "$P"/etc/proxima/configs/*.toml

# prometheus, laid out like prom/prometheus (the compose file mounts the real config over the default one).
M=$CTX/prometheus
add_elf "$M" "$PROMETHEUS_BIN" /bin/prometheus
add_accounts "$M"
install -D -m 0644 "$ROOT/deploy/prometheus/prometheus.yml" "$M/etc/prometheus/prometheus.yml"

# Hash of everything staged: names, types, modes and contents (not times).
HASH=$(
  cd "$CTX"
  {
    find . -printf '%y %m %P %l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-32
)

up_to_date=true
for name in learner actor prometheus; do
  have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "proxima-$name:$TAG" 2>/dev/null || true)
  [[ $have == "$HASH" ]] || up_to_date=false
done
if $up_to_date; then
  echo "== images proxima-{learner,actor,prometheus}:$TAG are up to date ($HASH)"
else
  old_ids=$(docker image ls -q --filter "label=$LABEL" | sort -u)
  for name in learner actor prometheus; do
    echo "== docker build --target $name -t proxima-$name:$TAG"
    # DOCKER_BUILDKIT is left as the caller has it: the legacy builder and BuildKit both build this file.
    docker build --quiet --target "$name" --label "$LABEL=$HASH" -t "proxima-$name:$TAG" "$CTX" >/dev/null
  done
  # Drop the images these tags pointed to before, unless still tagged or used by a container.
  for id in $old_ids; do
    [[ -z $(docker image inspect -f '{{join .RepoTags ""}}' "$id" 2>/dev/null) ]] && docker image rm "$id" >/dev/null 2>&1 || true
  done
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^proxima-(learner|actor|prometheus):$TAG " || true
