"""Found in round 9: is the table GELU slow in the training step because its 256 KB tables leave the caches? A variant
whose gathers read only the first 4,096 entries (16 KB: wrong results, times only) against today's kernel, the
bench's bf16 MLM step alternating, with the time inside the GELU calls. Usage, pinned to one core:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/gelu_small_table.py"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, print_steps, replaced, steps_inside  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
torch.set_num_threads(1)
xmodlm.tune_allocator()
now = native.SOURCE.read_text()
low, high = "_mm512_castsi512_si256(bits)", "_mm512_extracti64x4_epi64(bits, 1)"
small = now
for half in (low, high):
    small = replaced(small, f"_mm512_cvtepu16_epi32({half})",
                     f"_mm512_and_si512(_mm512_cvtepu16_epi32({half}), _mm512_set1_epi32(0xFFF))")
libraries = build_libraries({"now": now, "16 KB table (wrong)": small})
phases, _, _ = build("bf16")
steps, within = steps_inside(libraries, phases, ("gelu_table", "gelu_table_backward"), 15)
print_steps(steps, within, "GELU")
