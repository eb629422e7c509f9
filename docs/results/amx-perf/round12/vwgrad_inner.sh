#!/bin/sh
# The inner-loop runs of vwgrad.md: each register block, then 8 x 2 without broadcasts; core 0, one thread.
#   sh docs/results/amx-perf/round12/vwgrad_inner.sh
dir=$(dirname "$0")
for rv in "8 2" "4 4" "6 4" "8 3" "12 2" "16 1" "8 1" "4 2"; do
    set -- $rv
    gcc -O3 -mavx512f -mavx512bf16 -mavx512vl -DR=$1 -DV=$2 "$dir/vwgrad_inner.c" -o /tmp/vwgrad_inner && taskset -c 0 /tmp/vwgrad_inner 256
done
gcc -O3 -mavx512f -mavx512bf16 -mavx512vl -DR=8 -DV=2 -DNOBCAST "$dir/vwgrad_inner.c" -o /tmp/vwgrad_inner && echo "no broadcast:" && taskset -c 0 /tmp/vwgrad_inner 256
