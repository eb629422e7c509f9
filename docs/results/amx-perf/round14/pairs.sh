#!/bin/bash
# usage: pairs.sh N rev1 rev2 ... : docs/results/amx-perf/round13/fp32_bench.py in each revision's `git archive` tree
# (/tmp/r14/trees/<rev>, made by `git archive <rev> | tar -x -C /tmp/r14/trees/<rev>`), alternately, N rounds; outputs beside this script, first line the command, time and CPU
n=$1; shift
out=/work/main/docs/results/amx-perf/round14
for i in $(seq 1 $n); do
  for rev in "$@"; do
    f=$out/fp32-bench-$rev-${TAG:-pair}$i.txt
    cmd="PYTHONPATH=src /work/main/.venv/bin/python /work/main/docs/results/amx-perf/round13/fp32_bench.py 7 2 ${SUITES:-train,infer}"
    (cd /tmp/r14/trees/$rev && echo "# cd <git archive $rev> && $cmd" > $f && eval $cmd >> $f 2>&1)
  done
done
