#!/usr/bin/env bash
# Creates one Python virtual environment per peer RL system under
# bench/.venvs/<peer> and installs bench/peers/requirements-<peer>.txt into it.
#
#   bench/setup_peers.sh              # all peers: sb3 cleanrl sf rllib
#   bench/setup_peers.sh sf rllib     # only these
#
# Idempotent: a venv whose INSTALL_OK stamp holds the hash of its inputs
# (requirements file, legacy build constraints, interpreter version) is left
# alone. Anything else is deleted and rebuilt from scratch.
#
# Failures are per peer: a peer that fails to install gets
# bench/.venvs/<peer>/INSTALL_ERROR (the tail of its pip log) and the script
# carries on with the next one. The exit status is non-zero if any peer failed.
#
# Environment:
#   PYTHON        interpreter used to create the venvs (default: python3.11)
#   PIP_CACHE_DIR pip's own variable; all venvs share one cache (pip's default
#                 ~/.cache/pip unless set), so torch is downloaded only once.
#
# Requirements files may carry "#legacy-sdist <pkg>==<ver>" lines: those
# sdists are old enough that modern setuptools refuses to build them (gym
# 0.21.0's metadata). They are built into a per-venv wheelhouse first with
# bench/peers/legacy-build-constraints.txt applied to the isolated build
# environment only, then the normal install picks the wheel up from there.

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
peers_dir=$here/peers
venvs=$here/.venvs
python=${PYTHON:-python3.11}
legacy_constraints=$peers_dir/legacy-build-constraints.txt

# Modules imported after installation as a quick sanity check.
declare -A check=(
  [sb3]="import torch, gymnasium, stable_baselines3, rl_zoo3"
  [cleanrl]="import torch, gym, stable_baselines3, tensorboard, cleanrl, importlib.util as u; assert u.find_spec('cleanrl.ppo')"
  [sf]="import torch, gymnasium, sample_factory"
  [rllib]="import torch, gymnasium, ray, ray.rllib"
)

if [ $# -gt 0 ]; then peers=("$@"); else peers=(sb3 cleanrl sf rllib); fi

if ! command -v "$python" >/dev/null; then
  echo "setup_peers: interpreter '$python' not found (set PYTHON)" >&2
  exit 2
fi
pyver=$("$python" -c 'import sys; print(sys.version.split()[0])')
mkdir -p "$venvs"

# Hash of everything that determines a venv's contents.
input_hash() {
  { cat "$peers_dir/requirements-$1.txt"; cat "$legacy_constraints"; echo "python $pyver"; } |
    sha256sum | cut -c1-16
}

# Installs one peer; runs in a subshell so that nothing here can abort the
# loop over peers. Returns non-zero on failure.
install_peer() {
  local peer=$1 req=$peers_dir/requirements-$1.txt venv=$venvs/$1
  local hash log start
  if [ ! -f "$req" ]; then
    echo "[$peer] no such requirements file: $req"
    return 1
  fi
  hash=$(input_hash "$peer")
  if [ -f "$venv/INSTALL_OK" ] && [ "$(head -n1 "$venv/INSTALL_OK")" = "$hash" ]; then
    echo "[$peer] up to date ($hash), skipped"
    return 0
  fi

  echo "[$peer] installing into $venv ..."
  start=$(date +%s)
  rm -rf "$venv"
  mkdir -p "$venv"
  log=$venv/install.log
  # A separate "bash -e" (not a subshell): install_peer runs on the left of
  # "||", where bash ignores set -e in subshells.
  PEER=$peer REQ=$req VENV=$venv PY=$python LEGACY=$legacy_constraints \
  CHECK=${check[$peer]:-pass} bash -euo pipefail -c '
    "$PY" -m venv "$VENV"
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
    wheelhouse=$VENV/wheelhouse
    mkdir -p "$wheelhouse"
    # Old sdists that need an old setuptools in their isolated build env.
    for spec in $(grep -E "^#legacy-sdist " "$REQ" | cut -d" " -f2- || true); do
      echo "== building legacy sdist $spec"
      PIP_CONSTRAINT=$LEGACY "${pip[@]}" wheel --progress-bar off --no-deps -w "$wheelhouse" "$spec"
    done
    echo "== pip install -r $REQ"
    "${pip[@]}" install --progress-bar off --find-links "$wheelhouse" -r "$REQ"
    echo "== import check"
    "$VENV/bin/python" -c "$CHECK"
  ' >"$log" 2>&1
  local rc=$?
  local secs=$(( $(date +%s) - start ))
  if [ $rc -ne 0 ]; then
    tail -n 60 "$log" >"$venv/INSTALL_ERROR"
    echo "[$peer] FAILED after ${secs}s (exit $rc); see $venv/INSTALL_ERROR"
    return 1
  fi
  local size
  size=$(du -sm "$venv" | cut -f1)
  printf '%s\ninstalled %s in %ss, %s MB, python %s\n' \
    "$hash" "$(date -u +%FT%TZ)" "$secs" "$size" "$pyver" >"$venv/INSTALL_OK"
  echo "[$peer] ok in ${secs}s, ${size} MB"
}

failed=()
for peer in "${peers[@]}"; do
  install_peer "$peer" || failed+=("$peer")
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "setup_peers: failed: ${failed[*]}" >&2
  exit 1
fi
echo "setup_peers: all ok (${peers[*]})"
