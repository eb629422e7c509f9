#!/bin/bash
# The same pre-training command (same seed) in separate processes, four times without the file of kernel choices
# (XMODLM_KERNEL_CACHE=off: each process times its weight gradients) and four times with one file (the first times,
# the others take its choices). Prints each run's weights digest and the weight-gradient choices its checkpoint holds.
#   bash docs/results/amx-perf/round15/repro.sh OUTDIR   (run from the repository root; ../shared/data/ntrex)
set -e
out=${1:-/tmp/repro}; mkdir -p $out
for mode in off file; do
  rm -f $out/choices.json
  for i in 1 2 3 4; do
    cache=off; [ $mode = file ] && cache=$out/choices.json
    run=$out/$mode-$i; rm -rf $run
    env XMODLM_KERNEL_CACHE=$cache PYTHONPATH=src python -m xmodlm pretrain --data ../shared/data/ntrex \
      --languages de_DE,en_XX,fi_FI,sw_KE --vocab-size 8000 --preset small --mixed-batches --max-steps 3 \
      --log-every 3 --eval-every 0 --save-every 0 --valid-batches 1 --out $run --precision fp32 > $run.log 2>&1
    PYTHONPATH=src python - "$mode" "$i" "$run" <<'PY'
import hashlib, sys, torch
mode, i, run = sys.argv[1:]
digest = hashlib.sha256(open(f"{run}/model.safetensors", "rb").read()).hexdigest()[:16]
kernels = torch.load(f"{run}/checkpoint/rank0.pt", weights_only=True)["kernels"]
chosen = " ".join(f"{k[1]}->{k[2]}:{v}" for k, v in sorted(kernels.items()) if k[0] == "weight gradient")
print(f"{mode:4s} run {i}: weights {digest}  weight gradients (in->out:choice) {chosen}", flush=True)
PY
  done
done
