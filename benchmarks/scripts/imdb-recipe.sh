#!/usr/bin/env bash
# Choosing the demo's IMDB recipe without touching test reviews: each run trains on the training split with the demo's
# settings plus the flags given, keeps the best prompt on the first 200 validation reviews (as the demo does), and is
# then scored on validation reviews 1,001-2,000 -- a selection set that neither training nor early stopping sees.
# Prints one markdown row per run and keeps every run's folder.
#
# usage: benchmarks/scripts/imdb-recipe.sh OUT_DIR NAME POSITIONS STEPS [train flags...]
#   e.g. benchmarks/scripts/imdb-recipe.sh runs/recipe end64 64 250 --truncation KeepEnd
# Needs a Release build (dotnet build PromptEngine.sln -c Release) and the assets (promptengine fetch-assets).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1 name=$2 len=$3 steps=$4; shift 4
cache=${PROMPTENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promptengine}
data=$cache/data/imdb-v1-seed1234; model=$cache/models/stories15M-v1
cli() { dotnet run --project src/PromptEngine.Cli -c Release --no-build -- "$@"; }
[ -f "$data/train.jsonl" ] && [ -f "$model/config.json" ] || cli fetch-assets >/dev/null
mkdir -p "$out"
[ -f "$out/results.md" ] || printf '%s\n' "| run | positions, steps, train flags | selection accuracy (validation 1,001-2,000, 95 % Wilson) | training | scoring |" \
  "|---|---|---|---|---|" > "$out/results.md"
selection=$out/selection.jsonl
[ -f "$selection" ] || sed -n 1001,2000p "$data/validation.jsonl" > "$selection"

# Flags that change how rows are encoded must reach eval too.
eval_flags=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in --truncation|--template|--labels|--label-words|--method) eval_flags+=("${args[i]}" "${args[i+1]}");; esac
done

dir=$out/$name; rm -rf "$dir"; mkdir -p "$dir"
start=$(date +%s)
cli train --model "$model" --train "$data/train.jsonl" --validation "$data/validation.jsonl" --out "$dir" \
  --max-length "$len" --steps "$steps" --batch-size 8 --warmup 20 --schedule cosine \
  --eval-every $(( (steps + 2) / 3 )) --eval-examples 200 --checkpoint-every "$steps" --train-examples 8000 --seed 1 "$@" > "$dir/train.log" 2>&1
trained=$(date +%s)
cli eval --model "$model" --data "$selection" --examples 1000 --max-length "$len" --prompt "$dir/best_prompt.safetensors" \
  "${eval_flags[@]}" --json > "$dir/selection.json"
done_at=$(date +%s)
acc=$(sed -E 's/.*"accuracy":([0-9.eE+-]+).*/\1/' "$dir/selection.json")
# Wilson 95 % interval on 1,000 reviews
awk -v a="$acc" -v n=1000 -v name="$name" -v flags="$len positions, $steps steps, $*" -v tt=$((trained - start)) -v et=$((done_at - trained)) 'BEGIN {
  z = 1.959964; c = a * n; p = c / n; d = 1 + z*z/n; m = (p + z*z/(2*n)) / d; h = z * sqrt(p*(1-p)/n + z*z/(4*n*n)) / d;
  printf "| %s | %s | %.1f %% (%.1f-%.1f) | %d s | %d s |\n", name, flags, 100*a, 100*(m-h), 100*(m+h), tt, et }' | tee -a "$out/results.md"
