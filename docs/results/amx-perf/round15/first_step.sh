#!/bin/bash
# Pairs of processes: an empty choice file (the process times its choices), then the same file (taken back).
#   bash docs/results/amx-perf/round15/first_step.sh PAIRS   (from the repository root)
for i in $(seq ${1:-3}); do
  rm -f /tmp/first_step_choices.json
  echo "pair $i, timed:     $(PYTHONPATH=src python docs/results/amx-perf/round15/first_step.py /tmp/first_step_choices.json)"
  echo "pair $i, from file: $(PYTHONPATH=src python docs/results/amx-perf/round15/first_step.py /tmp/first_step_choices.json)"
done
