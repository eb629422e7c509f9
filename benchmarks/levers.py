"""Each kernel lever off and on, side by side in one process: the before/after figures of the README.

    python3 benchmarks/levers.py [--steps 7] [--suite infer,train]

Every lever has a switch in ``xmodlm.kernels``; this script alternates the same call with the switch
off (before) and on (after), call by call, so that both see the same machine, and prints the median
times, the ratio and MFU against the matmul ceiling measured in the same run at the same thread count.

* infer: the bf16 and fp32 encoder forward of ``xmodlm bench``'s infer suite (xmod-base shape, 81
  languages, 8 x 128 mixed), with the paths chosen for processors without AMX and with them
  (``prefer_amx_paths``: attention through SDPA's flash kernel); bf16 with one formulation per
  product and with the formulation timed per shape (``use_autotune``); bf16 with oneDNN and torch's ops only
  and with the own AMX kernels (``use_amx_kernels``: attention, LayerNorm, the language modules, the linears
  where timed faster); the fp32 model under bf16
  autocast on torch's ops (``use_onednn(False)``, the path before) and on the fused kernels;
* train: the masked-LM step of the train suite (4 x 256, 8 languages, 16 x 128 mixed, fused AdamW), bf16
  autocast and fp32, each lever of ``--train-levers`` off and on (the others on): the plain and the
  fused cross-entropy (``ce``: ``use_fused_cross_entropy``), the tied lookup's gradient dense and as
  rows (``tied``: ``use_tied_row_gradient``), Dropout's mask and scale as two multiplications and in
  one pass (``dropout``: ``use_one_pass_dropout``), bf16 autocast's linears as torch's ``F.linear`` (``addmm``,
  which fills its output with the bias first) and with the bias inside oneDNN's product (``linear``:
  ``use_autocast_linear``), attention as ``dropout_attention`` and in the own kernel (``attention``:
  ``use_native_training_attention``), the products reading autocast's cast of a fused norm's output or the bf16
  copy the norm's kernel writes (``twin``: ``use_bf16_twin``); ``native``, ``mask``, ``norm``, ``vocab``, ``wgrad``,
  ``gelu`` and ``modules`` as ``TRAIN_LEVERS`` below says.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import xmodlm
from xmodlm import kernels
from xmodlm.kernels import dropout as kernel_dropout, native
from xmodlm.model import XmodForMaskedLM, XmodModel
from xmodlm.recipes.bench import batch_for, make_config, matmul_ceiling, model_flops
from train_breakdown import step_phases  # benchmarks/ is on the path when this script runs


def alternate(calls: dict, steps: int, warmup: int = 2) -> tuple[dict[str, float], dict[str, tuple]]:
    """name -> (switch, fn): median seconds of fn() with switch() applied first, alternating call by call; and
    where fn returns its phases' seconds (a tuple), the median of each phase."""
    for switch, fn in calls.values():
        for _ in range(warmup):
            switch()
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    phases: dict[str, list[tuple]] = {name: [] for name in calls}
    for _ in range(steps):
        for name, (switch, fn) in calls.items():
            switch()
            start = time.perf_counter()
            parts = fn()
            times[name].append(time.perf_counter() - start)
            if isinstance(parts, tuple):
                phases[name].append(parts)
    medians = {name: tuple(statistics.median(p[i] for p in ps) for i in range(len(ps[0])))
               for name, ps in phases.items() if ps}
    return {name: statistics.median(t) for name, t in times.items()}, medians


def infer_calls() -> tuple[dict, float, int]:
    config = make_config(12, 768, 250002, 81, 128)
    torch.manual_seed(0)
    fp32 = XmodModel(config, add_pooling_layer=False).eval()
    bf16 = XmodModel(config, add_pooling_layer=False)
    bf16.load_state_dict(fp32.state_dict())
    bf16 = bf16.to(torch.bfloat16).eval()
    ids = batch_for(config, 8, 128, 81)[0]
    lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])  # as the bench

    def forward(model, autocast: bool = False):
        def call():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return torch.no_grad()(model)(ids, lang_ids=lang)
        return call

    def only(**switches):  # the inference switches at their defaults but ``switches``
        def apply():
            kernels.prefer_amx_paths(switches.get("amx"))
            kernels.use_autotune(switches.get("autotune", True))
            kernels.use_onednn(switches.get("onednn", True))
            kernels.use_amx_kernels(switches.get("native", True))
        return apply
    # each "before" on its own copy of the model: a tuned linear keeps only the packed weights its chosen
    # formulation reads, so one model called both ways would repack them at every switch
    calls = {}
    for name, model in (("bf16", bf16), ("fp32", fp32)):
        calls[f"forward {name}, paths without AMX"] = (only(amx=False), forward(copy.deepcopy(model)))
        calls[f"forward {name}, AMX paths"] = (only(amx=True), forward(model))
    calls["forward bf16, oneDNN and torch only"] = (only(native=False), forward(copy.deepcopy(bf16)))
    calls["forward bf16, with the own AMX kernels (kernels/native.c)"] = (only(), forward(bf16))
    calls["forward bf16, one formulation per product"] = (only(autotune=False), forward(copy.deepcopy(bf16)))
    calls["forward bf16, formulation timed per shape (autotune)"] = (only(), forward(bf16))
    amp = copy.deepcopy(fp32)  # its own copy: one model called both ways would repack its modules at every switch
    calls["forward bf16 autocast (fp32 weights), torch's ops"] = (only(onednn=False), forward(amp, True))
    calls["forward bf16 autocast (fp32 weights), fused kernels on cached bf16 weights"] = (only(), forward(amp, True))
    return calls, model_flops(config, 8, 128, 0, train=False), 8 * 128


class _NumpyDraws:
    """Stands in for the kernels in kernels.dropout only: its masks' numpy path (the same bits), the rest unchanged."""

    @staticmethod
    def available() -> bool:
        return False


# training levers: name -> (before: what it takes, its setting; after: the same)
TRAIN_LEVERS = {
    "ce": ("plain cross-entropy", lambda: kernels.use_fused_cross_entropy(False),
           "fused cross-entropy", lambda: kernels.use_fused_cross_entropy(True)),
    "tied": ("tied lookup's gradient dense", lambda: kernels.use_tied_row_gradient(False),
             "tied lookup's gradient as rows", lambda: kernels.use_tied_row_gradient(True)),
    "dropout": ("dropout as two multiplications", lambda: kernels.use_one_pass_dropout(False),
                "dropout in one pass", lambda: kernels.use_one_pass_dropout(True)),
    "linear": ("autocast's F.linear (addmm)", lambda: kernels.use_autocast_linear(False),
               "linears with the bias inside oneDNN's product", lambda: kernels.use_autocast_linear(True)),
    # every own training kernel at once (cross-entropy, residual norms, masks, attention, vocabulary projection,
    # language modules)
    "native": ("own kernels off", lambda: kernels.use_amx_kernels(False),
               "own kernels on", lambda: kernels.use_amx_kernels(True)),
    "mask": ("dropout masks in numpy", lambda: setattr(kernel_dropout, "native", _NumpyDraws),
             "dropout masks in the own kernel", lambda: setattr(kernel_dropout, "native", native)),
    "norm": ("LayerNorm(dropout(h) + residual) as torch's ops", lambda: kernels.use_fused_residual_norm(False),
             "LayerNorm(dropout(h) + residual) in the own kernel", lambda: kernels.use_fused_residual_norm(True)),
    "attention": ("attention as dropout_attention (torch's ops)", lambda: kernels.use_native_training_attention(False),
                  "attention in the own kernel", lambda: kernels.use_native_training_attention(True)),
    "twin": ("products cast the fused norm's output (autocast)", lambda: kernels.use_bf16_twin(False),
             "products read the fused norm's bf16 copy", lambda: kernels.use_bf16_twin(True)),
    "vocab": ("tied decoder as autocast_linear (casts of the matrix)",
              lambda: kernels.use_native_vocab_projection(False),
              "tied decoder in the own kernel on the float32 weight",
              lambda: kernels.use_native_vocab_projection(True)),
    "wgrad": ("linears' weight and bias gradients as addmm's backward", lambda: kernels.use_native_weight_grad(False),
              "linears' weight and bias gradients in the own kernel", lambda: kernels.use_native_weight_grad(True)),
    "gelu": ("GELU as torch's gelu and gelu_backward", lambda: kernels.use_table_gelu(False),
             "GELU through the own kernel's tables of every bf16 value", lambda: kernels.use_table_gelu(True)),
    "modules": ("language modules as autocast's batched matmuls", lambda: kernels.use_native_training_modules(False),
                "language modules in the own kernel, one call each way",
                lambda: kernels.use_native_training_modules(True)),
}


def defaults() -> None:
    """Every training lever on (its "after" setting: the library's defaults)."""
    for _, _, _, on in TRAIN_LEVERS.values():
        on()


def train_calls(levers: list[str], precisions: list[str]) -> tuple[dict, float, int]:
    config = make_config(4, 256, 32000, 8, 128)
    ids, lang, labels = batch_for(config, 16, 128, 8)
    calls = {}
    for precision in precisions:
        torch.manual_seed(0)
        model = XmodForMaskedLM(config).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

        def step(model=model, opt=opt, amp=precision == "bf16") -> tuple[float, float, float]:
            return step_phases(model, opt, ids, lang, labels, amp)
        for lever in levers:  # each lever before and after, the others at their defaults
            before, off, after, on = TRAIN_LEVERS[lever]
            calls[f"MLM step {precision}, {before}"] = (lambda off=off: (defaults(), off()), step)
            calls[f"MLM step {precision}, {after}"] = (lambda on=on: (defaults(), on()), step)
    return calls, model_flops(config, 16, 128, int(labels.ne(-100).sum()), train=True), 16 * 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--suite", default="infer,train")
    parser.add_argument("--precisions", default="bf16,fp32", help="the training step's, comma-separated")
    parser.add_argument("--train-levers", default="ce,tied,dropout", help=f"comma-separated, of {sorted(TRAIN_LEVERS)}")
    args = parser.parse_args()
    xmodlm.tune_allocator()
    ceilings = {dt: max(matmul_ceiling(dtype).values()) for dt, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    print(f"{torch.get_num_threads()} thread(s), AMX bf16 detected: {kernels.amx_bf16()}; matmul ceilings "
          + ", ".join(f"{dt} {c / 1e9:,.0f} GFLOP/s" for dt, c in ceilings.items()))
    print("| measurement | time (ms) | tokens/s | after / before | MFU | forward / backward / optimizer (ms) |\n"
          "|---|---:|---:|---:|---:|---:|")
    for suite in args.suite.split(","):
        if suite == "infer":
            calls, flops, tokens = infer_calls()
        else:
            calls, flops, tokens = train_calls(args.train_levers.split(","), args.precisions.split(","))
        times, phases = alternate(calls, args.steps)
        names = list(times)
        for i, name in enumerate(names):
            before = times[names[i - i % 2]]  # pairs: (before, after)
            dt = "bf16" if "bf16" in name else "fp32"
            speed = f"{before / times[name]:.2f}x" if i % 2 else ""
            split = " / ".join(f"{p * 1e3:.1f}" for p in phases.get(name, ()))
            print(f"| {name} | {times[name] * 1e3:.1f} | {tokens / times[name]:,.0f} | {speed} | "
                  f"{flops / times[name] / ceilings[dt]:.1%} | {split} |")
    kernels.prefer_amx_paths(None)
    kernels.use_autotune(True)
    kernels.use_onednn(True)
    defaults()


if __name__ == "__main__":
    main()
