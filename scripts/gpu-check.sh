#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU (driver 580 or newer), PyTorch with CUDA and no network, from this
# checkout plus target/gpu-check/ (built elsewhere by scripts/build-gpu-check.sh). In under 8 minutes it runs:
#   1. the PyTorch goldens with candle on CUDA (PROXIMA_TEST_DEVICE=cuda),
#   2. the backend equivalence (candle on CUDA against the fused CPU backend),
#   3. a Nature-CNN and a MinAtar-CNN PPO update, candle on CUDA against bench/torch_update.py on the same GPU,
#   4. CartPole-v1 trained with the learner on CUDA (configs/cartpole.toml, target 475).
# Each step has its own time limit; a failed step is reported and the next one runs. The report is written to
# $OUT/gpu-check.md (OUT defaults to target/gpu-check-out), the logs beside it; the exit status is the number of
# failed steps.
#
#   scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

BUNDLE="$PWD/target/gpu-check"
OUT="${OUT:-$PWD/target/gpu-check-out}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
REPORT="$OUT/gpu-check.md"
: >"$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
failed=0

say "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), bundle built from $(cat "$BUNDLE/COMMIT" 2>/dev/null || echo '?')"
say ""
say '```'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$REPORT"
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' \
  2>&1 | tee -a "$REPORT"
say '```'

# The binaries, unpacked (xz, or Python's lzma where xz is missing).
BIN=$(mktemp -d)
for f in "$BUNDLE"/*.xz; do
  name=$(basename "$f" .xz)
  if command -v xz >/dev/null; then
    xz -dc "$f" >"$BIN/$name"
  else
    "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$f" "$BIN/$name"
  fi
  chmod +x "$BIN/$name"
done

# cuBLAS 13 and cuRAND 10 at run time: from the CUDA install or PyTorch's NVIDIA wheels (cuRAND: else a stub).
search=(/usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu)
while read -r dir; do search+=("$dir"); done < <("$PYTHON" -c '
import os, site
for root in site.getsitepackages() + [site.getusersitepackages()]:
    base = os.path.join(root, "nvidia")
    for dirpath, _, files in os.walk(base):
        if any(f.startswith(("libcublas", "libcurand")) for f in files):
            print(dirpath)' 2>/dev/null)
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
  found=$(find "${search[@]}" -maxdepth 1 -name "$lib" -print -quit 2>/dev/null)
  if [ -n "$found" ]; then
    LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  elif [ "$lib" = libcurand.so.10 ]; then
    # The learner draws no random numbers on the GPU; the stub only lets the binaries start.
    say "- $lib not found: using the bundle's stub (no cuRAND calls are made)"
    LD_LIBRARY_PATH="$BUNDLE/stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  else
    say "- $lib not found (searched ${search[*]}): the Rust CUDA steps will fail to start"
  fi
done
export LD_LIBRARY_PATH

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output in $OUT/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local started=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    say "- $name: ok ($((SECONDS - started)) s)"
  else
    say "- $name: FAILED (exit $rc after $((SECONDS - started)) s; last lines of $name.log below)"
    say '```'
    tail -n 15 "$OUT/$name.log" | tee -a "$REPORT"
    say '```'
    failed=$((failed + 1))
  fi
}

say ""
say "## Correctness on CUDA"
export PROXIMA_GOLDEN_DIR="$PWD/tests/fixtures/golden"
step goldens 60 env PROXIMA_TEST_DEVICE=cuda "$BIN/golden" --test-threads 1
step backends 60 env PROXIMA_TEST_DEVICE=cuda "$BIN/backends" --test-threads 1
grep -h "test result" "$OUT/goldens.log" "$OUT/backends.log" | tee -a "$REPORT"

say ""
say "## PPO update samples/s on this GPU (candle against PyTorch, same batch, minibatch, epochs and loss)"
samples() { grep -o '"samples_per_s": *[0-9.]*' "$OUT/$1.log" | grep -o '[0-9.]*$'; }
# pair NAME ARGS...: the update of ARGS in candle on CUDA, then in PyTorch on the same GPU, and their ratio.
pair() {
  local name=$1
  shift
  step "update-$name-candle" 60 "$BIN/proxima-bench" update --backend candle --device cuda "$@" \
    --action-space 'Discrete(6)' --min-seconds 10
  step "update-$name-torch" 60 "$PYTHON" bench/torch_update.py --device cuda "$@" --actions 6 --min-seconds 10
  local ours theirs ratio
  ours=$(samples "update-$name-candle")
  theirs=$(samples "update-$name-torch")
  ratio=$("$PYTHON" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$ours" "$theirs" \
    2>/dev/null || echo "-")
  say "- $name: candle ${ours:-?}, PyTorch ${theirs:-?} samples/s, ratio $ratio"
}
pair nature-cnn --preset nature_cnn --shared-trunk --obs-shape 4,84,84 --batch 1024 --minibatch 256 --epochs 4
pair minatar-cnn --preset minatar_cnn --obs-shape 10,10,4 --batch 8192 --minibatch 1024 --epochs 4

say ""
say "## CartPole-v1 on CUDA (configs/cartpole.toml)"
step cartpole 150 "$BIN/learner" train -c configs/cartpole.toml --device cuda --runs-dir "$OUT/runs" \
  --run-name cartpole-cuda --dashboard-addr none
grep -E "steps .*return" "$OUT/cartpole.log" | tail -n 1 | tee -a "$REPORT"

say ""
say "$failed step(s) failed"
exit "$failed"
