"""modtrain_alone.py with the working tree's change split: base (BASE's native.c), base with mt_product and mt_drain
always inlined (the working tree's functions' attributes only), the working tree's, base again (the control). Run
pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/modtrain_alone_parts.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from modtrain_alone import BASE, main  # noqa: E402
from harness import old_source, replaced  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

inline = replaced(replaced(old_source(BASE), "static inline void mt_drain(",
                           "static inline __attribute__((always_inline)) void mt_drain("),
                  "static void mt_product(", "static inline __attribute__((always_inline)) void mt_product(")
main({"inlined": inline, "new": native.SOURCE.read_text()})
