#!/usr/bin/env bash
# The recurrent learner update against PyTorch, side by side in one run: `proxima-bench update --core C` (fused
# backend) and `bench/torch_update.py --core C` (CleanRL ppo_atari_lstm.py's per-step loop over nn.LSTM / nn.GRU),
# the same model (a shared tanh MLP trunk, one-layer core and linear heads with `--shared-trunk`; or separate: the
# actor and the critic each with their own trunk, core and head), batch of whole sequences with random initial states
# (one per core) and ~2% episode starts, minibatch of whole sequences, epochs, loss and Adam, at equal threads.
# Prints one Markdown row per case, each shape shared (core `lstm`) then separate (core `lstm, separate`): samples/s
# of each and the ratio.
#
# Usage: bench/recurrent_update.sh
# Environment: PYTHON (default .venv/bin/python, with torch), THREADS (default "1 2"), EPOCHS (default 4).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
THREADS=${THREADS:-"1 2"}
EPOCHS=${EPOCHS:-4}
cargo build --release -p proxima-bench --bin proxima-bench >/dev/null
B=target/release/proxima-bench
rate() { python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])["samples_per_s"]))'; }

echo "| core | obs / hidden / core | T x sequences per minibatch | threads | proxima samples/s | PyTorch samples/s | ratio |"
echo "|---|---|---|---|---|---|---|"
# (core, obs_dim, hidden, core_size, seq_steps, minibatch): masked CartPole's shape, and a wider one.
for case in "lstm 4 64 64 32 256" "gru 4 64 64 32 256" "lstm 64 256 256 32 1024" "gru 64 256 256 32 1024"; do
    read -r core obs hidden size steps minibatch <<<"$case"
    for trunk in shared separate; do
        shared=() label=$core
        if [[ $trunk == shared ]]; then shared=(--shared-trunk); else label="$core, separate"; fi
        for t in $THREADS; do
            ours=$($B update --backend fused --threads "$t" --core "$core" --core-size "$size" --hidden "$hidden" \
                --obs-dim "$obs" --seq-steps "$steps" --minibatch "$minibatch" --batch 8192 --epochs "$EPOCHS" \
                ${shared[@]+"${shared[@]}"} | rate)
            theirs=$("$PYTHON" bench/torch_update.py --threads "$t" --core "$core" --core-size "$size" \
                --hidden "$hidden" --obs-dim "$obs" --actions 2 --seq-steps "$steps" --minibatch "$minibatch" \
                --batch 8192 --epochs "$EPOCHS" ${shared[@]+"${shared[@]}"} | rate)
            ratio=$(python3 -c "print(f'{$ours / $theirs:.1f}x')")
            echo "| $label | $obs / $hidden / $size | $steps x $((minibatch / steps)) | $t | $ours | $theirs | $ratio |"
        done
    done
done
