#!/bin/bash
# usage: pairs.sh N rev1 rev2 ... ; runs bench for each rev alternately, N rounds
n=$1; shift
out=/work/main/docs/results/amx-perf/round12
mkdir -p $out
for i in $(seq 1 $n); do
  for rev in "$@"; do
    f=$out/bench-zen5-$rev-${TAG:-pair}$i.txt
    cmd="PYTHONPATH=src /work/main/.venv/bin/python -m xmodlm bench --suite infer,train --steps 7 --warmup 2"
    (cd /tmp/r12/trees/$rev && echo "# cd <git archive $rev> && $cmd ; $(date -u '+%F %T') ; $(lscpu | grep 'Model name' | sed 's/  */ /g'), family $(lscpu | awk '/CPU family/{print $3}')" > $f && eval $cmd >> $f 2>&1)
  done
done
