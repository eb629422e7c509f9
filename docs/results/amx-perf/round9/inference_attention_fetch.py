"""The xmod-base bf16 encoder forward (the bench's inference shape: 12 x 768, 81 languages, 8 x 128 mixed) with the
inference attention kernel as of the commit before its fetches ahead (9c2f2bc's native.c by default, or --base) and
as built (the next (example, head)'s q, k, v and output rows fetched while this one runs), alternating call by call
in one process, with the time inside the attention calls; the outputs compared bit for bit. One thread or the
process's. Usage: PYTHONPATH=src python3 docs/results/amx-perf/round9/inference_attention_fetch.py [--base REV]"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xmodlm  # noqa: E402
from harness import Inside, alternate, build, old_source  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.model import XmodModel  # noqa: E402
from xmodlm.recipes.bench import batch_for, make_config  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="9c2f2bc")
parser.add_argument("--calls", type=int, default=15)
args = parser.parse_args()
xmodlm.tune_allocator()
libraries = build({"no fetch": old_source(args.base), "fetch ahead": native.SOURCE.read_text()})
config = make_config(12, 768, 250002, 81, 128)
torch.manual_seed(0)
model = XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
inside = Inside()
native.attention = inside.wrap(native.attention)
outputs = {}


def forward():
    start = time.perf_counter()
    with torch.no_grad():
        outputs[id(native._STATE["lib"])] = model(input_ids=ids, lang_ids=lang).last_hidden_state
    return time.perf_counter() - start


calls, within = alternate(list(libraries), lambda name: native._STATE.update(lib=libraries[name]), forward, args.calls,
                          inside=inside)
print(f"{torch.get_num_threads()} thread(s); xmod-base bf16 forward 8 x 128, ms (median of {args.calls}, min), and "
      f"attention within it:")
for name in libraries:
    print(f"  {name:12s} forward {statistics.median(calls[name]) * 1e3:.1f}  {min(calls[name]) * 1e3:.1f}   "
          f"attention {statistics.median(within[name]) * 1e3:.2f}  {min(within[name]) * 1e3:.2f}")
a, b = outputs.values()
print(f"  outputs bit-identical: {torch.equal(a, b)}")
