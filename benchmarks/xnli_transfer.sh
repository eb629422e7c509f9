#!/usr/bin/env bash
# Zero-shot cross-lingual transfer on XNLI: X-Mod vs the shared baseline, both pre-trained on NTREX.
# Usage: benchmarks/xnli_transfer.sh [OUT_DIR]   (default /work/runs/xnli; data from ../shared/data)
# Fine-tune on English XNLI dev pairs 0:1500, evaluate pairs 1500:2490 of every language (English included).
set -euo pipefail
OUT=${1:-/work/runs/xnli}
DATA=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}          # shared 2-core machine
LANGS=ar_AR,de_DE,en_XX,es_XX,fr_XX,hi_IN,ru_RU,sw_KE,th_TH,tr_TR,vi_VN,zh_CN   # NTREX ∩ XNLI
EVAL_DATA=""
for code in ${LANGS//,/ }; do EVAL_DATA+=" --data $code=$DATA/xnli/dev-${code%%_*}.tsv"; done
mkdir -p "$OUT"
T() { local name=$1; shift; echo "+ $*"; /usr/bin/time -f "$name wall %e s" "$@"; }
# a step whose output is already complete is skipped, so a rerun continues after a failure
done_() { if [ -e "$1" ]; then echo "skip: $1 exists"; return 0; fi; return 1; }

# 1. one tokenizer for both models
done_ "$OUT/tok/tokenizer.json" || T tokenizer xmodlm tokenizer train --data "$DATA/ntrex" --languages $LANGS --vocab-size 8000 --seed 0 --out "$OUT/tok"

# 2. pre-train X-Mod and the shared baseline: same tokenizer, seed, steps, data order
PRE="--data $DATA/ntrex --languages $LANGS --preset tiny --hidden-size 128 --tokenizer $OUT/tok --seq-len 128 \
  --batch-size 16 --max-steps 3000 --lr 1e-3 --warmup-ratio 0.06 --precision fp32 --seed 0 --eval-every 500 \
  --save-every 1000 --log-every 50 --device cpu --no-tensorboard"
done_ "$OUT/xmod/results.json" || T pretrain-xmod   xmodlm pretrain $PRE --out "$OUT/xmod"
done_ "$OUT/shared/results.json" || T pretrain-shared xmodlm pretrain $PRE --shared --out "$OUT/shared"

# 3. fine-tune on English (paper protocol: embeddings + language modules frozen), 4. evaluate zero-shot.
# FT_CONFIGS: "LR:EPOCHS ..." (chosen from English training loss only, never from the evaluation languages)
FT_CONFIGS=${FT_CONFIGS:-"3e-4:10 1e-3:30"}
for cfg in $FT_CONFIGS; do
  lr=${cfg%%:*}; ep=${cfg##*:}; tag=lr$lr-ep$ep
  FT="--task nli --train $DATA/xnli/dev-en.tsv --train-range 0:1500 --source-lang en_XX --epochs $ep --batch-size 32 \
    --valid $DATA/xnli/dev-en.tsv --valid-range 1500:2490 --eval-every 100 --lr $lr --warmup-ratio 0.06 --precision fp32 --seed 0 --log-every 10 --device cpu --no-tensorboard"
  for m in xmod shared; do
    done_ "$OUT/ft-$m-$tag/task.json" || T finetune-$m-$tag xmodlm finetune --model "$OUT/$m" $FT --out "$OUT/ft-$m-$tag"
    done_ "$OUT/eval-$m-$tag/results.json" || T evaluate-$m-$tag xmodlm evaluate --model "$OUT/ft-$m-$tag" --task nli \
      $EVAL_DATA --eval-range 1500:2490 --device cpu --out "$OUT/eval-$m-$tag"
  done
done
