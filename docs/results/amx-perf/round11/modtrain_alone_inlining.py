"""modtrain_alone.py on this branch's change with gcc's inlining in three forms: mt_drain and mt_product always
inlined (as kept), mt_drain only, neither (gcc's choice); base and base again around them. Run pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/modtrain_alone_inlining.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from modtrain_alone import main  # noqa: E402
from harness import replaced  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

text = native.SOURCE.read_text()
drain_only = replaced(text, "static inline __attribute__((always_inline)) void mt_product(", "static void mt_product(")
neither = replaced(drain_only, "static inline __attribute__((always_inline)) void mt_drain(", "static inline void mt_drain(")
main({"both inline": text, "drain inline": drain_only, "gcc's choice": neither})
