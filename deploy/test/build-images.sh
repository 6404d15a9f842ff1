#!/usr/bin/env bash
# Builds the local test images proxima-learner:test, proxima-actor:test, proxima-actor-python:test and
# proxima-prometheus:test without pulling anything (no image registry needed): the release binaries are built on
# the host, then each image is `FROM scratch` plus a staged root filesystem with the binaries, exactly the shared
# libraries `ldd` lists and the dynamic loader, /etc/passwd and /etc/group (user `proxima`, uid/gid 10001;
# `nobody`), CA certificates and the configs. The Python actor image holds the host's Python interpreter (the base
# installation of PROXIMA_PYTHON, at its host paths) with its standard library, and python/ with its runtime
# dependencies as `pip install --target /opt/proxima-actor` puts them (pip fetches those from its package index or
# takes them from its cache). See deploy/test/Dockerfile for the stages; they mirror deploy/Dockerfile.
#
# Idempotent and fast when nothing changed: the staged context is hashed and the build is skipped when all four
# images already carry that hash in their `proxima.test.inputs` label.
#
# Environment:
#   PROXIMA_BIN_DIR      directory holding already built `learner` and `actor` binaries (skips `cargo build`)
#   PROMETHEUS_BIN       the prometheus binary (default: `prometheus` on PATH; Debian: apt-get install prometheus)
#   PROXIMA_PYTHON       Python 3.10+ with pip: its base interpreter goes into the Python actor image and its pip
#                        installs the package (default: python3; a venv's python stages the venv's base Python)
#   PROXIMA_PIP_EXTRAS   extras of the package, e.g. `mujoco` (default: none), like PIP_EXTRAS of deploy/Dockerfile
#   PROXIMA_IMAGE_TAG    tag of the four images (default: test)
#   PROXIMA_IMAGE_WORK   staging directory (default: <cargo target dir>/docker-test-images)
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TAG=${PROXIMA_IMAGE_TAG:-test}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")
WORK=$(realpath -m "${PROXIMA_IMAGE_WORK:-$TARGET_DIR/docker-test-images}")
PY=${PROXIMA_PYTHON:-python3}
PIP_EXTRAS=${PROXIMA_PIP_EXTRAS:-}
LABEL=proxima.test.inputs
# The images `proxima-NAME:TAG`, each built from the stage NAME of deploy/test/Dockerfile.
IMAGES=(learner actor actor-python prometheus)

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
"$PY" -m pip --version >/dev/null 2>&1 || die "no pip for '$PY' (set PROXIMA_PYTHON to a Python 3.10+ with pip)"

CTX=$WORK/context
rm -rf "$CTX"
mkdir -p "$CTX/proxima" "$CTX/python" "$CTX/prometheus" "$CTX/empty"
cp "$ROOT/deploy/test/Dockerfile" "$CTX/Dockerfile"

# add_libs ROOTFS FILE...: every shared library `ldd` lists for the FILEs (executables or shared objects) and the
# loader, each at the path ldd resolved it to (symlinks followed); not those it resolved inside ROOTFS (libraries a
# staged package brings along and finds through its RPATH, like numpy.libs/). A library ldd does not find is fine
# only when ROOTFS has a file of that name (a package's plugin needing the package's own library, which the
# package loads first, like mujoco/plugin/*.so and mujoco/libmujoco.so.*).
add_libs() {
  local rootfs=$1 file out lib
  local -A libs=()
  shift
  for file in "$@"; do
    if ! out=$(ldd "$file" 2>&1); then
      [[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]] && continue
      die "ldd $file failed: $out"
    fi
    while read -r lib; do
      [[ -n $(find "$rootfs" -name "$lib" -print -quit) ]] || die "$file needs libraries this host lacks: $out"
    done < <(awk '$2 == "=>" && $3 == "not" { print $1 }' <<<"$out")
    while read -r lib; do
      if [[ -n $lib && $(realpath -m "$lib") != "$rootfs"/* ]]; then
        libs[$lib]=1
      fi
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
  done
  for lib in "${!libs[@]}"; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
}

# add_elf ROOTFS BINARY DEST: the executable at DEST plus its shared libraries and the loader (add_libs).
add_elf() {
  local rootfs=$1 bin=$2 dest=$3
  install -D -m 0755 "$bin" "$rootfs$dest"
  add_libs "$rootfs" "$bin"
}

# copy_tree SRC DEST [TAR OPTIONS...]: the contents of directory SRC into DEST (modes and symlinks kept), without
# what the tar options exclude (names relative to SRC: ./test).
copy_tree() {
  local src=$1 dest=$2
  shift 2
  mkdir -p "$dest"
  tar -C "$src" -cf - "$@" . | tar -C "$dest" -xf -
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

# The Python actor, laid out like the python image (/usr/local/bin/python3): the base interpreter of $PY (a venv's
# python stages the venv's base installation) at its host path with /usr/local/bin/python3 linking to it, its
# standard library without tests, IDLE, tkinter, ensurepip, site-packages and bytecode, and the package with its
# runtime dependencies in /opt/proxima-actor, without bytecode too (the image sets PYTHONDONTWRITEBYTECODE; the hash
# stays stable); then the shared libraries of every extension module.
Y=$CTX/python
py_paths=$("$PY" -c '
import os, sys, sysconfig
assert sys.version_info >= (3, 10), f"Python {sys.version.split()[0]} is too old: proxima_actor needs 3.10+"
stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
print(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))
print(stdlib)
print(os.path.realpath(sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload")))
') || die "cannot ask $PY where its interpreter and standard library are"
{ read -r py_exe && read -r py_stdlib && read -r py_dynload; } <<<"$py_paths"
add_elf "$Y" "$py_exe" "$py_exe"
if [[ $py_exe != /usr/local/bin/python3 ]]; then
  mkdir -p "$Y/usr/local/bin"
  ln -s "$py_exe" "$Y/usr/local/bin/python3"
fi
copy_tree "$py_stdlib" "$Y$py_stdlib" --exclude=__pycache__ --anchored --exclude=./test --exclude=./idlelib \
  --exclude=./tkinter --exclude=./turtledemo --exclude=./ensurepip --exclude=./site-packages \
  --exclude=./dist-packages --exclude='./config-*' --exclude=./lib-dynload
copy_tree "$py_dynload" "$Y$py_dynload" --exclude='./_tkinter*'
# pip builds a local project inside its source tree: install from a copy (at a fixed path, which pip records), so
# that python/ stays as it is.
PKG_SRC=$WORK/python-src
rm -rf "$PKG_SRC"
copy_tree "$ROOT/python" "$PKG_SRC" --exclude=__pycache__ --exclude='*.egg-info' --anchored --exclude=./build \
  --exclude=./tests
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --no-warn-script-location \
  --target "$Y/opt/proxima-actor" "$PKG_SRC${PIP_EXTRAS:+[$PIP_EXTRAS]}" ||
  die "pip install of python/ failed (it needs its package index, or a cache holding the dependencies)"
rm -rf "$Y/opt/proxima-actor/bin" # console scripts naming the host's interpreter in their #! line
mapfile -d '' py_modules < <(find "$Y" -type f -name '*.so*' -print0)
add_libs "$Y" "${py_modules[@]}"
add_accounts "$Y"

# Hash of everything staged: names, types, modes and contents (not times).
HASH=$(
  cd "$CTX"
  {
    find . -printf '%y %m %P %l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-32
)

up_to_date=true
for name in "${IMAGES[@]}"; do
  have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "proxima-$name:$TAG" 2>/dev/null || true)
  [[ $have == "$HASH" ]] || up_to_date=false
done
if $up_to_date; then
  echo "== images proxima-{$(IFS=,; echo "${IMAGES[*]}")}:$TAG are up to date ($HASH)"
else
  old_ids=$(docker image ls -q --filter "label=$LABEL" | sort -u)
  for name in "${IMAGES[@]}"; do
    echo "== docker build --target $name -t proxima-$name:$TAG"
    # DOCKER_BUILDKIT is left as the caller has it: the legacy builder and BuildKit both build this file.
    docker build --quiet --target "$name" --label "$LABEL=$HASH" -t "proxima-$name:$TAG" "$CTX" >/dev/null
  done
  # Drop the images these tags pointed to before, unless still tagged or used by a container.
  for id in $old_ids; do
    [[ -z $(docker image inspect -f '{{join .RepoTags ""}}' "$id" 2>/dev/null) ]] && docker image rm "$id" >/dev/null 2>&1 || true
  done
fi
names=$(IFS='|'; echo "${IMAGES[*]}")
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^proxima-($names):$TAG " || true
