#!/usr/bin/env bash
# The seed's claims about prompt tuning, measured on stories15M (issue #12 §4): one table per question, every run scored
# on the same first 1,000 held-out test examples with a Wilson 95 % interval. Every run shares the demo's training
# settings (8,000 training examples in the same seeded order, batches of 8, AdamW with cosine decay after 20 warm-up
# steps, the best prompt kept on the first 200 validation examples, evaluated 3 times per run) and keeps the text's
# opening (the default truncation, as imdb-methods.sh does); only the table's variable changes.
# Nothing here is chosen on test examples: the tables report, the demo's recipe was chosen with imdb-recipe.sh on
# validation reviews.
#
# usage: benchmarks/scripts/seed-claims.sh OUT_DIR TABLE [SEED ...]
#   TABLE: init | length | placement | method | lr | spam        SEEDs default to 1 (give "1 2" for two seeds)
# Appends rows to OUT_DIR/TABLE.md and keeps every run's folder. About 4-6 minutes per IMDB run on 2 quiet cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1 table=$2; shift 2
seeds=("$@"); [ ${#seeds[@]} -gt 0 ] || seeds=(1)
cache=${PROMPTENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promptengine}
model=$cache/models/stories15M-v1
cli() { dotnet run --project src/PromptEngine.Cli -c Release --no-build -- "$@"; }
[ -f "$model/config.json" ] || cli fetch-assets >/dev/null
mkdir -p "$out"
steps=250 len=64 task=imdb
imdb_template='{prompt}Review: {text} Sentiment:{answer}'

wilson() { awk -v a="$1" -v n="$2" 'BEGIN { z = 1.959964; p = a; d = 1 + z*z/n; m = (p + z*z/(2*n)) / d;
  h = z * sqrt(p*(1-p)/n + z*z/(4*n*n)) / d; printf "%.1f %% (%.1f-%.1f)", 100*a, 100*(m-h), 100*(m+h) }'; }

# run NAME SEED METHOD P LR [train flags...]: train, then score the best prompt on the test split.
run() {
  local name=$1 seed=$2 method=$3 p=$4 lr=$5; shift 5
  local data=$cache/data/imdb-v1-seed1234 n=1000 s=$steps
  [ "$task" = spam ] && { data=$cache/data/spam-assassin-v1-seed1234; n=1000; s=100; }
  local task_flags=()
  [ "$task" = spam ] && task_flags=(--template '{prompt}Email: {text}
Is this email spam?{answer}' --labels ham spam --label-words ' no' ' yes')
  # A plain prompt's slots sit inside the row: give it P more positions so the text keeps the same room.
  local l=$len; [ "$method" = prompt ] && l=$((len + p))
  local dir=$out/$table/$name-seed$seed start=$(date +%s)
  rm -rf "$dir"; mkdir -p "$dir"
  local eval_flags=("${task_flags[@]}")
  local args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in --truncation|--template) eval_flags+=("${args[i]}" "${args[i+1]}");; esac
  done
  cli train --model "$model" --train "$data/train.jsonl" --validation "$data/validation.jsonl" --out "$dir" --method "$method" \
    --virtual-tokens "$p" --lr "$lr" --max-length "$l" --steps "$s" --batch-size 8 --warmup 20 --schedule cosine \
    --eval-every $(( (s + 2) / 3 )) --eval-examples 200 --checkpoint-every "$s" --train-examples 8000 --seed "$seed" \
    "${task_flags[@]}" "$@" > "$dir/train.log" 2>&1
  local trained=$(date +%s)
  cli eval --method "$method" --model "$model" --data "$data/test.jsonl" --examples "$n" --max-length "$l" \
    --prompt "$dir/best_prompt.safetensors" "${eval_flags[@]}" --json > "$dir/test.json"
  local acc; acc=$(sed -E 's/.*"accuracy":([0-9.eE+-]+).*/\1/' "$dir/test.json")
  printf '| %s | %s | %s | %s | %s | %s | %d s |\n' "$name" "$seed" "$method" "$p" "$lr${*:+ $*}" "$(wilson "$acc" "$n")" \
    $((trained - start)) | tee -a "$out/$table.md"
}

zeroshot() {
  local data=$cache/data/imdb-v1-seed1234 flags=() n=1000
  [ "$task" = spam ] && { data=$cache/data/spam-assassin-v1-seed1234; flags=(--template '{prompt}Email: {text}
Is this email spam?{answer}' --labels ham spam --label-words ' no' ' yes'); }
  cli eval --model "$model" --data "$data/test.jsonl" --examples "$n" --max-length "$len" "${flags[@]}" --json > "$out/$table-zeroshot.json"
  local acc; acc=$(sed -E 's/.*"accuracy":([0-9.eE+-]+).*/\1/' "$out/$table-zeroshot.json")
  printf '| zero-shot | - | - | 0 | - | %s | - |\n' "$(wilson "$acc" "$n")" | tee -a "$out/$table.md"
}

[ -f "$out/$table.md" ] || { echo "| run | seed | method | virtual tokens | lr, flags | test accuracy (95 % interval) | training time |"
  echo "|---|---|---|---|---|---|---|"; } > "$out/$table.md"
for seed in "${seeds[@]}"; do
  case $table in
    init) # Lester et al.: class-label initialisation beats sampled vocabulary beats random, the gap closing with scale.
      run init-random "$seed" prompt 20 0.03 --init random
      run init-vocab "$seed" prompt 20 0.03 --init vocab
      run init-text "$seed" prompt 20 0.03 --init text --init-text ' negative positive' ;;
    length) # Lester et al.: longer prompts help small models, gains flatten past ~20 tokens.
      for p in 1 5 20 100; do run length$p "$seed" prompt "$p" 0.03; done ;;
    placement) # where the soft prompt sits in the row
      run prefix "$seed" prompt 20 0.03 --template '{prompt}Review: {text} Sentiment:{answer}'
      run infix "$seed" prompt 20 0.03 --template 'Review: {prompt}{text} Sentiment:{answer}'
      run suffix "$seed" prompt 20 0.03 --template 'Review: {text}{prompt} Sentiment:{answer}'
      run interleaved "$seed" prompt 20 0.03 --template '{prompt}Review: {prompt}{text}{prompt} Sentiment:{answer}' ;;
    method) # plain vs deep vs deep + MLP, each with and without the linear head
      run plain20 "$seed" prompt 20 0.03
      run deep2 "$seed" prefix 2 0.03
      run deep20-mlp512 "$seed" prefix 20 0.0003 --prefix-projection 512
      run plain20-head "$seed" prompt 20 0.03 --head linear
      run deep2-head "$seed" prefix 2 0.03 --head linear
      run deep20-mlp512-head "$seed" prefix 20 0.0003 --prefix-projection 512 --head linear ;;
    lr) # three learning rates per method, a decade apart
      for lr in 0.003 0.03 0.3; do run plain20-lr$lr "$seed" prompt 20 $lr; run deep2-lr$lr "$seed" prefix 2 $lr; done
      for lr in 0.00003 0.0003 0.003; do run deep20-mlp512-lr$lr "$seed" prefix 20 $lr --prefix-projection 512; done ;;
    spam) task=spam
      [ "$seed" = "${seeds[0]}" ] && zeroshot
      run plain20 "$seed" prompt 20 0.03
      run deep2 "$seed" prefix 2 0.03
      run deep2-head "$seed" prefix 2 0.03 --head linear ;;
    zeroshot) zeroshot ;;
    *) echo "unknown table '$table' (init, length, placement, method, lr, spam, zeroshot)" >&2; exit 2 ;;
  esac
done
