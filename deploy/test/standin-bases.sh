#!/usr/bin/env bash
# Builds local stand-ins for the base images of deploy/Dockerfile, for machines that cannot pull from an image
# registry (the test machines), so that the real Dockerfile builds unchanged through its build args:
#
#   proxima-standin/debian:bookworm-slim   RUNTIME_IMAGE: Debian bookworm, `debootstrap --variant=minbase` from
#                                          Debian's mirror (apt works inside it, as in debian:bookworm-slim)
#   proxima-standin/rust:1-bookworm        RUST_IMAGE: the same plus gcc, libc6-dev, ca-certificates and this
#                                          host's Rust toolchain, laid out like the official rust image (CARGO_HOME
#                                          /usr/local/cargo, RUSTUP_HOME /usr/local/rustup, cargo on PATH); and the
#                                          crates of Cargo.lock vendored at /usr/local/cargo/vendor, which the
#                                          image's cargo config puts in place of crates.io (no network needed)
#
# Then, from the repository root:
#
#   DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile --target learner \
#     --build-arg RUST_IMAGE=proxima-standin/rust:1-bookworm \
#     --build-arg RUNTIME_IMAGE=proxima-standin/debian:bookworm-slim -t proxima-learner .
#
# (tests/tests/real_images.rs builds both targets this way through deploy/docker-compose.yml and runs them.)
#
# Needs root (debootstrap and chroot), debootstrap (`apt-get install debootstrap`), Debian's mirror, Docker and
# the Rust toolchain. Idempotent: when both images carry the hash of their inputs (suite, mirror, `rustc -vV`,
# Cargo.lock, this script) in their `proxima.standin.inputs` label, nothing is done.
#
# Environment:
#   DEBIAN_MIRROR          the mirror debootstrap and the images' apt use (default http://deb.debian.org/debian)
#   PROXIMA_STANDIN_WORK   staging directory (default: <cargo target dir>/standin-bases)
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(realpath -m "${PROXIMA_STANDIN_WORK:-${CARGO_TARGET_DIR:-$ROOT/target}/standin-bases}")
SLIM=proxima-standin/debian:bookworm-slim
RUST=proxima-standin/rust:1-bookworm
LABEL=proxima.standin.inputs

die() {
  echo "standin-bases.sh: $*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (debootstrap and chroot)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon"
SYSROOT=$(rustc --print sysroot) || die "no Rust toolchain (rustc) on PATH"

mkdir -p "$WORK"
exec 9>"$WORK/.lock"
flock -w 1800 9 || die "timed out waiting for another standin-bases.sh"

HASH=$(
  {
    echo "$SUITE $MIRROR"
    rustc -vV
    cat "$ROOT/Cargo.lock" "${BASH_SOURCE[0]}"
  } | sha256sum | cut -c1-32
)
up_to_date=true
for image in "$SLIM" "$RUST"; do
  have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$image" 2>/dev/null || true)
  [[ $have == "$HASH" ]] || up_to_date=false
done
if $up_to_date; then
  echo "== $SLIM and $RUST are up to date ($HASH)"
  exit 0
fi

# import DIR IMAGE [CHANGE...]: DIR's tree as IMAGE, labelled with the inputs' hash.
import() {
  local dir=$1 image=$2
  shift 2
  local changes=(--change "LABEL $LABEL=$HASH" --change 'CMD ["bash"]')
  for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$dir" --numeric-owner -cf - . | docker import "${changes[@]}" - "$image" >/dev/null
  echo "== $image: $(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec)"
}

# The slim base: minbase, without the package cache and lists (apt-get update fetches them, as in the real one).
BASE=$WORK/slim
rm -rf "$BASE" "$WORK/rust"
echo "== debootstrap --variant=minbase $SUITE from $MIRROR"
for attempt in 1 2; do
  debootstrap --variant=minbase "$SUITE" "$BASE" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 && break
  [[ $attempt == 2 ]] && die "debootstrap failed twice; see $WORK/debootstrap.log"
  echo "debootstrap failed; trying again" >&2
  rm -rf "$BASE"
done
echo "deb $MIRROR $SUITE main" >"$BASE/etc/apt/sources.list"
rm -rf "$BASE"/var/cache/apt/archives/*.deb "$BASE"/var/lib/apt/lists/*
import "$BASE" "$SLIM"

# The Rust base: the slim tree plus a C compiler and CA certificates (chroot, the host's resolver for apt), the
# host's toolchain without its documentation, and the vendored crates.
R=$WORK/rust
cp -a "$BASE" "$R"
cp /etc/resolv.conf "$R/etc/resolv.conf"
echo "== gcc, libc6-dev, ca-certificates into the Rust base"
chroot "$R" /bin/bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends gcc libc6-dev ca-certificates >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*' \
  >"$WORK/apt.log" 2>&1 || die "apt-get install in the Rust base failed; see $WORK/apt.log"
rm -f "$R/etc/resolv.conf"
TOOLCHAIN=/usr/local/rustup/toolchains/standin
mkdir -p "$R$TOOLCHAIN" "$R/usr/local/cargo/bin"
tar -C "$SYSROOT" --exclude=./share -cf - . | tar -C "$R$TOOLCHAIN" -xf -
for tool in cargo rustc rustdoc; do
  ln -s "$TOOLCHAIN/bin/$tool" "$R/usr/local/cargo/bin/$tool"
done
echo "== cargo vendor (the crates of Cargo.lock)"
(cd "$ROOT" && cargo vendor --locked --versioned-dirs "$R/usr/local/cargo/vendor" >/dev/null 2>"$WORK/vendor.log") ||
  die "cargo vendor failed; see $WORK/vendor.log"
cat >"$R/usr/local/cargo/config.toml" <<'EOF'
# Stand-in for crates.io: the crates of the project's Cargo.lock (deploy/test/standin-bases.sh).
[source.crates-io]
replace-with = "vendored"

[source.vendored]
directory = "/usr/local/cargo/vendor"
EOF
import "$R" "$RUST" 'ENV RUSTUP_HOME=/usr/local/rustup' 'ENV CARGO_HOME=/usr/local/cargo' \
  'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
rm -rf "$BASE" "$R"
