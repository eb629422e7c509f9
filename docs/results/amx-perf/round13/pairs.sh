#!/bin/bash
# usage: [OUT=dir] [TREES=dir] [TAG=name] [SUITES=train,infer] pairs.sh N rev1 rev2 ... : round13/fp32_bench.py in each
# revision's `git archive` tree ($TREES/<rev>, made by `git archive <rev> | tar -x -C $TREES/<rev>`; default
# /tmp/r13/trees), alternately, N rounds; outputs in $OUT (default beside this script), first line the command, time, CPU
n=$1; shift
here=/work/main/docs/results/amx-perf/round13
out=${OUT:-$here}
for i in $(seq 1 $n); do
  for rev in "$@"; do
    f=$out/fp32-bench-$rev-${TAG:-pair}$i.txt
    cmd="PYTHONPATH=src /work/main/.venv/bin/python $here/fp32_bench.py 7 2 ${SUITES:-train,infer}"
    (cd ${TREES:-/tmp/r13/trees}/$rev && echo "# cd <git archive $rev> && $cmd" > $f && eval $cmd >> $f 2>&1)
  done
done
