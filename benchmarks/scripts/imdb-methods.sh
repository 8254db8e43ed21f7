#!/usr/bin/env bash
# stories15M on IMDB: plain prompt tuning against deep prompts (prefix tuning / P-tuning v2), at the same number of
# virtual tokens and at the same parameter budget, everything else equal: the same 8,000 training reviews in the same
# seeded order, 96 text positions per row (a plain prompt's rows add its P slots in front), batches of 8, 300 AdamW
# steps, cosine decay after 20 warm-up steps, the best prompt chosen on 200 validation reviews every 100 steps, then
# accuracy on the first 1,000 held-out test reviews. Prints one markdown row per run and keeps every run's folder.
#
# usage: benchmarks/scripts/imdb-methods.sh [OUT_DIR] [RUN ...]
#   runs (default: all but plain20-lr0.3 and the -head ones): zeroshot plain20 prefix20 plain24 prefix2 prefix20-mlp512 plain20-lr0.3
#   plain20-head prefix2-head prefix20-head
# Needs a Release build (dotnet build PromptEngine.sln -c Release) and the assets (promptengine fetch-assets).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/imdb-methods}; shift || true
runs=("$@"); [ ${#runs[@]} -gt 0 ] || runs=(zeroshot plain20 prefix20 plain24 prefix2 prefix20-mlp512)
cache=${PROMPTENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promptengine}
data=$cache/data/imdb-v1-seed1234; model=$cache/models/stories15M-v1
cli() { dotnet run --project src/PromptEngine.Cli -c Release --no-build -- "$@"; }
[ -f "$data/train.jsonl" ] && [ -f "$model/config.json" ] || cli fetch-assets >/dev/null
mkdir -p "$out"

accuracy() { sed -E 's/.*"accuracy":([0-9.eE+-]+).*/\1/' "$1" | awk '{printf "%.1f", 100 * $1}'; }

run() { # name method P lr extra...
  local name=$1 method=$2 p=$3 lr=$4; shift 4
  local len=96 init=random
  [ "$method" = prompt ] && { len=$((96 + p)); init=vocab; }
  local dir=$out/$name start=$(date +%s)
  rm -rf "$dir"; mkdir -p "$dir"
  cli train --method "$method" --init "$init" --model "$model" --train "$data/train.jsonl" --validation "$data/validation.jsonl" --out "$dir" \
    --virtual-tokens "$p" --max-length "$len" --steps 300 --batch-size 8 --lr "$lr" --warmup 20 --schedule cosine \
    --eval-every 100 --eval-examples 200 --checkpoint-every 100 --train-examples 8000 --seed 1 "$@" > "$dir/train.log" 2>&1
  local trained=$(date +%s)
  cli eval --method "$method" --model "$model" --data "$data/test.jsonl" --examples 1000 --max-length "$len" \
    --prompt "$dir/best_prompt.safetensors" --json > "$dir/test.json"
  local params best
  # stories15M: a plain prompt is P·288 values, a deep one P·(6 layers · 2 · 288) = P·3456 (the MLP, if any, is folded away).
  if [ "$method" = prompt ]; then params=$((p * 288)); else params=$((p * 3456)); fi
  best=$(awk -F, 'NR>1 && $8!="" && $8>b {b=$8; s=$1} END {printf "%.1f %% (step %s)", 100 * b, s}' "$dir/metrics.csv")
  printf '| %s | %s | %s | %s | %s | %s | %.1f %% | %d s |\n' "$name" "$method" "$p" "$params" "$lr${*:+ $*}" "$best" \
    "$(accuracy "$dir/test.json")" $((trained - start))
}

echo "| run | method | virtual tokens | trained values | lr, flags | best validation accuracy (200 reviews) | test accuracy (1,000 reviews) | training time |"
echo "|---|---|---|---|---|---|---|---|"
for r in "${runs[@]}"; do
  case $r in
    zeroshot) cli eval --model "$model" --data "$data/test.jsonl" --examples 1000 --max-length 96 --json > "$out/zeroshot.json"
              printf '| zero-shot | - | 0 | 0 | - | - | %.1f %% | - |\n' "$(accuracy "$out/zeroshot.json")" ;;
    plain20) run plain20 prompt 20 0.03 ;;
    prefix20) run prefix20 prefix 20 0.03 ;;
    plain24) run plain24 prompt 24 0.03 ;;          # 24·288 = 6,912 values, the budget of a 2-token deep prompt
    prefix2) run prefix2 prefix 2 0.03 ;;           # 2·6·2·288 = 6,912 values
    prefix20-mlp512) run prefix20-mlp512 prefix 20 0.0003 --prefix-projection 512 ;;
    plain20-lr0.3) run plain20-lr0.3 prompt 20 0.3 ;;
    plain20-head) run plain20-head prompt 20 0.03 --head linear ;;   # + the linear classifier head (--head-lr 0.001)
    prefix2-head) run prefix2-head prefix 2 0.03 --head linear ;;
    prefix20-head) run prefix20-head prefix 20 0.03 --head linear ;;
    *) echo "unknown run '$r'" >&2; exit 2 ;;
  esac
done
