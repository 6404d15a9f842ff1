#!/usr/bin/env bash
# The learning suite: trains every tuned config in configs/ for seeds 1, 2 and 3 with its step budget
# (`total_steps` of the config), evaluates each final model deterministically over 20 episodes, and writes a
# Markdown table of steps-to-target (the first update, after 100 finished episodes, whose 100-episode mean
# return reaches the config's
# `target_return`, read from progress.csv) and evaluation returns, plus each run's learning curve.
#
# Usage: bench/learning_suite.sh [OUT_DIR]            (default runs/learning-suite-<time>)
# Environment:
#   CONFIGS         config names without .toml (default: all six tuned configs)
#   SEEDS           seeds (default "1 2 3")
#   STOP_AT_TARGET  1: stop each run when it reaches its target (default 0: run the whole budget, so the eval
#                   measures the final policy)
#   EVAL_EPISODES   episodes per evaluation (default 20)
#   LEARNER_BIN     use this learner binary instead of building target/release/learner
#
# Output: OUT_DIR/results.md (the table), OUT_DIR/results.csv, OUT_DIR/runs/<config>-seed<N>/ (run directories)
# and OUT_DIR/img/<config>-seed<N>.png (learning curves, shrunk when ImageMagick's `convert` is installed).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-runs/learning-suite-$(date +%Y%m%d-%H%M%S)}
CONFIGS=${CONFIGS:-"cartpole pendulum pendulum_kl acrobot mountain_car_continuous mountain_car"}
SEEDS=${SEEDS:-"1 2 3"}
STOP_AT_TARGET=${STOP_AT_TARGET:-0}
EVAL_EPISODES=${EVAL_EPISODES:-20}

if [[ -n "${LEARNER_BIN:-}" ]]; then
    BIN=$LEARNER_BIN
else
    cargo build --release -p proxima-cli --bin learner
    BIN=target/release/learner
fi
mkdir -p "$OUT/runs" "$OUT/img"

# A top-level key of a TOML config (the text after `=`, comments and underscores removed).
toml_key() {
    sed -n "s/^$2[[:space:]]*=[[:space:]]*//p" "$1" | head -n1 | sed 's/#.*//; s/"//g; s/_//g; s/[[:space:]]*$//'
}

# A numeric field of the eval JSON line.
json_field() {
    grep -o "\"$2\":[^,}]*" <<<"$1" | head -n1 | cut -d: -f2
}

# First env_steps whose mean_return over a full window (at least 100 finished episodes, the default
# return_window of every config) reaches the target, or "not reached".
steps_to_target() {
    awk -F, -v target="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $col["episodes"] + 0 >= 100 && $col["mean_return"] != "" && $col["mean_return"] + 0 >= target + 0 {
            print $col["env_steps"]; found = 1; exit
        }
        END { if (!found) print "not reached" }' "$1"
}

last_mean_return() {
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next } { m = $col["mean_return"] }
        END { if (m == "") print "-"; else printf "%.1f\n", m }' "$1"
}

{
    echo "| config | env | seed | step budget | target | steps to target | final mean return (train, last 100) | eval return (deterministic, $EVAL_EPISODES ep.) mean ± std [min, max] | eval length |"
    echo "|---|---|---|---|---|---|---|---|---|"
} >"$OUT/results.md"
echo "config,env,seed,total_steps,target,steps_to_target,final_mean_return,eval_mean,eval_std,eval_min,eval_max,eval_mean_length,wall_seconds" >"$OUT/results.csv"

for name in $CONFIGS; do
    cfg=configs/$name.toml
    env=$(toml_key "$cfg" env)
    budget=$(toml_key "$cfg" total_steps)
    target=$(toml_key "$cfg" target_return)
    for seed in $SEEDS; do
        run=$name-seed$seed
        rm -rf "${OUT:?}/runs/$run"
        stop=()
        [[ "$STOP_AT_TARGET" == 1 ]] || stop=(--target-return inf)
        echo "== $run: $env, $budget steps, target $target"
        start=$(date +%s.%N)
        "$BIN" train --config "$cfg" --seed "$seed" "${stop[@]}" --runs-dir "$OUT/runs" --run-name "$run" \
            2>"$OUT/runs/$run.log"
        wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        dir=$OUT/runs/$run
        eval_json=$("$BIN" eval --checkpoint "$dir/model.safetensors" --episodes "$EVAL_EPISODES" --deterministic \
            --seed 1000 | tail -n1)
        reached=$(steps_to_target "$dir/progress.csv" "$target")
        final=$(last_mean_return "$dir/progress.csv")
        mean=$(json_field "$eval_json" mean_return)
        std=$(json_field "$eval_json" std_return)
        min=$(json_field "$eval_json" min_return)
        max=$(json_field "$eval_json" max_return)
        len=$(json_field "$eval_json" mean_length)
        # Shrunk with ImageMagick when a working `convert` is installed, copied as is otherwise.
        if ! { command -v convert >/dev/null 2>&1 &&
            convert "$dir/progress.png" -resize 50% -colors 32 "PNG8:$OUT/img/$run.png" 2>/dev/null; }; then
            cp "$dir/progress.png" "$OUT/img/$run.png"
        fi
        printf '| %s | %s | %s | %s | %s | %s | %s | %.1f ± %.1f [%.1f, %.1f] | %.1f |\n' "$name" "$env" "$seed" \
            "$budget" "$target" "$reached" "$final" "$mean" "$std" "$min" "$max" "$len" >>"$OUT/results.md"
        echo "$name,$env,$seed,$budget,$target,${reached// /_},$final,$mean,$std,$min,$max,$len,$wall" >>"$OUT/results.csv"
        printf '   steps to target: %s, final mean return %s, eval %.1f ± %.1f (%.0f s)\n' "$reached" "$final" \
            "$mean" "$std" "$wall"
    done
done

echo
cat "$OUT/results.md"
echo
echo "wrote $OUT/results.md, $OUT/results.csv and $OUT/img/"
