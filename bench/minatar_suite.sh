#!/usr/bin/env bash
# The MinAtar learning suite: trains each game with a config (configs/minatar.toml, the 64-64 ReLU MLP on
# PureJaxRL's settings, by default) for each seed and writes a Markdown table of the final mean return (the last
# logged mean of the last 100 episodes), wall time and env steps/s, beside the anchors the issue measured on this
# machine (PureJaxRL's ppo.py on gymnax, 5M steps, seed 0) and gymnax's published PPO checkpoints.
#
# Usage: bench/minatar_suite.sh [OUT_DIR]          (default runs/minatar-suite-<time>)
# Environment:
#   CONFIG       config file (default configs/minatar.toml; configs/minatar_cnn.toml for the MinAtar CNN)
#   GAMES        games (default "Breakout Asterix Freeway SpaceInvaders Seaquest")
#   SEEDS        seeds (default "0 1 2")
#   TOTAL_STEPS  env steps per run (default the config's, 5M)
#   LEARNER_BIN  use this learner binary instead of building target/release/learner
#
# Output: OUT_DIR/results.md and OUT_DIR/results.csv, OUT_DIR/runs/<game>-seed<N>/ (run directories with
# progress.csv and progress.png).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-runs/minatar-suite-$(date +%Y%m%d-%H%M%S)}
CONFIG=${CONFIG:-configs/minatar.toml}
GAMES=${GAMES:-"Breakout Asterix Freeway SpaceInvaders Seaquest"}
SEEDS=${SEEDS:-"0 1 2"}
if [[ -n "${LEARNER_BIN:-}" ]]; then
    BIN=$LEARNER_BIN
else
    cargo build --release -p proxima-cli --bin learner
    BIN=target/release/learner
fi
mkdir -p "$OUT/runs"

# PureJaxRL's 5M-step return and wall time (seed 0, this machine), gymnax's checkpoint return, per game.
declare -A PUREJAXRL=([Breakout]="38.3 68" [Asterix]="4.7 101" [Freeway]="50.2 142" [SpaceInvaders]="159 100")
declare -A GYMNAX=([Breakout]=28 [Asterix]=15 [Freeway]=58 [SpaceInvaders]=131)

echo "game,seed,env_steps,seconds,steps_per_second,final_mean_return" >"$OUT/results.csv"
for game in $GAMES; do
    for seed in $SEEDS; do
        run="$game-seed$seed"
        args=(train --config "$CONFIG" --env "MinAtar/$game-v1" --seed "$seed" --runs-dir "$OUT/runs"
            --run-name "$run" --dashboard-addr none)
        [[ -n "${TOTAL_STEPS:-}" ]] && args+=(--total-steps "$TOTAL_STEPS")
        start=$(date +%s.%N)
        "$BIN" "${args[@]}" >"$OUT/runs/$run.log" 2>&1
        end=$(date +%s.%N)
        csv="$OUT/runs/$run/progress.csv"
        read -r steps ret < <(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
            { s = $col["env_steps"]; if ($col["mean_return"] != "") m = $col["mean_return"] }
            END { printf "%s %.1f\n", s, m }' "$csv")
        secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
        rate=$(awk -v s="$steps" -v t="$secs" 'BEGIN { printf "%.0f", s / t }')
        echo "$game,$seed,$steps,$secs,$rate,$ret" | tee -a "$OUT/results.csv"
    done
done

{
    echo "# MinAtar: $(basename "$CONFIG"), seeds $SEEDS"
    echo
    echo "| game | final mean return per seed | mean | PureJaxRL 5M (wall s) | gymnax checkpoint | target (mean / every seed) | wall s per run | env steps/s |"
    echo "|---|---|---|---|---|---|---|---|"
    for game in $GAMES; do
        awk -F, -v g="$game" -v pj="${PUREJAXRL[$game]:-- -}" -v gx="${GYMNAX[$game]:--}" '
            NR > 1 && $1 == g { r = r (r == "" ? "" : ", ") $6; sum += $6; n++; secs += $4; rate += $5 }
            END {
                split(pj, p, " ")
                target = (p[1] != "-" && p[1] + 0 > gx + 0) ? p[1] : gx
                t = (target == "-") ? "reported" : sprintf("%s / %.1f", target, 0.7 * target)
                printf "| %s | %s | %.1f | %s (%s) | %s | %s | %.0f | %.0f |\n", g, r, sum / n, p[1], p[2], gx, t, secs / n, rate / n
            }' "$OUT/results.csv"
    done
} >"$OUT/results.md"
cat "$OUT/results.md"
