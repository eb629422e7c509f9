"""The xmod-base bf16 encoder forward (the bench's inference shape: 12 x 768, 81 languages, 8 x 128 mixed languages,
eval mode, bf16 weights; a vocabulary of 1,000 words: only the encoder's products matter here) with the base
commit's kernel (twice: two identical libraries, the spread of the method) and with modstream.diff applied, whose
xm_modules fetches each thread's module weights into L2 STREAM_AHEAD bytes before they are read (every
STREAM_STRIDE-th line), at several distances, the libraries alternating forward by forward in one process, with the
time inside the linears (model.linear: the shared matrices and the attention output) and the language modules; the
outputs compared bit for bit. The formulations (kernels.tune) are chosen in the warm-up forwards, on the first
library, and then fixed for all. Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src
python3 docs/results/amx-perf/round10/modstream_forward.py [--base REV] [--ahead 96 384] [--calls 15]"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xmodlm  # noqa: E402
import xmodlm.model as model_mod  # noqa: E402
from variants import Inside, build, patched, old_source, replaced  # noqa: E402
from xmodlm.kernels import native, tune  # noqa: E402
from xmodlm.recipes.bench import batch_for, make_config  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="HEAD")
parser.add_argument("--ahead", type=int, nargs="+", default=[96, 384], help="STREAM_AHEAD, KB (STREAM_STRIDE 1)")
parser.add_argument("--calls", type=int, default=15)
args = parser.parse_args()
torch.set_num_threads(1)
xmodlm.tune_allocator()
today = patched(args.base, "modstream.diff")  # the weight stream, kept as a diff (not taken)
sources = {"base": old_source(args.base)}
sources["base again"] = sources["base"] + "\n"
for kb in args.ahead:
    sources[f"ahead {kb}K"] = replaced(today, "#define STREAM_AHEAD (96 * 1024)\n",
                                      f"#define STREAM_AHEAD ({kb} * 1024)\n")
libs = build(sources)
config = make_config(12, 768, 1000, 81, 128)
torch.manual_seed(0)
model = model_mod.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])  # as the bench: 7 languages, one of them twice
linears, modules = Inside(), Inside()
model_mod.linear = linears.wrap(model_mod.linear)
for module in model.modules():
    if isinstance(module, model_mod.XmodOutput):
        module.run_modules = modules.wrap(module.run_modules)
names = list(libs)
outputs, times = {}, {name: [] for name in names}
within = {name: ([], []) for name in names}
native._STATE["lib"] = libs[names[0]]
with torch.no_grad():
    for _ in range(3):  # the formulations chosen here, on the first library
        model(input_ids=ids, lang_ids=lang)
    for i in range(len(names) * (args.calls + 1)):
        name = names[i % len(names)]
        native._STATE["lib"] = libs[name]
        linears.start()
        modules.start()
        start = time.perf_counter()
        outputs[name] = model(input_ids=ids, lang_ids=lang).last_hidden_state
        took = time.perf_counter() - start
        if i >= len(names):  # the first round warms each library
            times[name].append(took)
            within[name][0].append(linears.spent[-1])
            within[name][1].append(modules.spent[-1])
print(f"{torch.get_num_threads()} thread(s); xmod-base bf16 forward 8 x 128, ms (median of {args.calls} "
      f"forwards, the libraries alternating forward by forward; min), and the linears and modules within it")
print("formulations: " + "; ".join(f"{k[2]}->{k[3]}{' ' + k[4] if k[4] else ''}{' +residual' if k[5] else ''}"
                                   f"{' +norm' if k[6] else ''}: {v}" for k, v in tune.choices().items()))
base_med = statistics.median(times[names[0]])
for name in names:
    med = statistics.median(times[name])
    print(f"  {name:12s} forward {med * 1e3:6.1f} {min(times[name]) * 1e3:6.1f}   linears "
          f"{statistics.median(within[name][0]) * 1e3:6.2f} {min(within[name][0]) * 1e3:6.2f}   modules "
          f"{statistics.median(within[name][1]) * 1e3:5.2f} {min(within[name][1]) * 1e3:5.2f}   base/this "
          f"{base_med / med:.3f}   bit-identical to {names[0]}: {torch.equal(outputs[name], outputs[names[0]])}")
print("all runs, forward ms: " + "; ".join(f"{name}: " + " ".join(f"{t * 1e3:.1f}" for t in times[name])
                                          for name in names))
