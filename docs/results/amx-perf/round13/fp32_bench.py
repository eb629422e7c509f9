"""The fp32 rows of `xmodlm bench --suite infer,train` (the same shapes, models, batches and timing), for any revision of
the package, on processors where the bench itself cannot run old revisions: before round 13 it measured a bf16 ceiling
through oneDNN first, which fails where oneDNN has no bf16 kernels (AVX2 only). Uses only functions every revision's
bench module has (fa7d6e4, before issue #19, onwards).

usage: cd <git archive REV> && PYTHONPATH=src python3 fp32_bench.py [steps] [warmup] [train,infer]
"""
import subprocess
import sys
import time

import torch

from xmodlm.model import XmodForMaskedLM, XmodModel
from xmodlm.recipes.bench import batch_for, make_config, matmul_ceiling, median_times, model_flops, reference_from

steps, warmup = (int(a) for a in (sys.argv[1:3] + ["7", "2"][len(sys.argv[1:3]):]))
suites = sys.argv[3].split(",") if len(sys.argv) > 3 else ["train", "infer"]
cpu = subprocess.run("lscpu | grep 'Model name' | sed 's/  */ /g'; lscpu | awk '/CPU family/{print \"family\", $3}'",
                     shell=True, capture_output=True, text=True).stdout.split("\n")
print(f"# fp32_bench.py {steps} {warmup} {','.join(suites)}; {time.strftime('%F %T')}; {' '.join(cpu).strip()}; "
      f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
ceiling = max(matmul_ceiling(torch.float32).values())
print(f"fp32 ceiling {ceiling / 1e9:.1f} GFLOP/s")


def train():
    # train: as bench_train (4 x 256, V=32k, 8 languages, 16 x 128; reference AdamW, ours fused AdamW)
    config = make_config(4, 256, 32000, 8, 128)
    torch.manual_seed(0)
    ours = XmodForMaskedLM(config).train()
    ref = XmodForMaskedLM(config)
    ref.load_state_dict(ours.state_dict())
    ref = reference_from(ref, "mlm").train()
    ids, lang, labels = batch_for(config, 16, 128, 8)

    def stepper(model, fused):
        opt = torch.optim.AdamW(list(model.parameters()), lr=1e-5, fused=fused)

        def step():
            model(input_ids=ids, lang_ids=lang, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    t = median_times({"reference fp32": stepper(ref, False), "ours fp32": stepper(ours, True)}, steps, warmup)
    flops = model_flops(config, 16, 128, int(labels.ne(-100).sum()), train=True)
    for k, v in t.items():
        print(f"MLM step 4x256 16x128 | {k} | {2048 / v:,.0f} tok/s | {t['reference fp32'] / v:.2f}x | MFU {100 * flops / v / ceiling:.1f}%")


def infer():
    # infer: as bench_infer (12 x 768, V=250k, 81 languages, 8 x 128 mixed)
    config = make_config(12, 768, 250002, 81, 128)
    torch.manual_seed(0)
    ours = XmodModel(config, add_pooling_layer=False).eval()
    ref = reference_from(ours, "base").eval()
    ids = batch_for(config, 8, 128, 81)[0]
    lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60]) % 81
    t = median_times({"reference fp32": lambda: torch.no_grad()(ref)(input_ids=ids, lang_ids=lang),
                      "ours fp32": lambda: torch.no_grad()(ours)(input_ids=ids, lang_ids=lang)}, steps, warmup)
    flops = model_flops(config, 8, 128, 0, train=False)
    for k, v in t.items():
        print(f"encoder forward 12x768 8x128 | {k} | {1024 / v:,.0f} tok/s | {t['reference fp32'] / v:.2f}x | MFU {100 * flops / v / ceiling:.1f}%")


for suite in suites:
    {"train": train, "infer": infer}[suite]()
