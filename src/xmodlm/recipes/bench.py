"""Benchmark recipe: ours against transformers' Xmod, side by side in one process, same weights.

Every row times both implementations alternately (warm-up, then the median of ``--steps``
calls each), so machine noise hits both alike; the table prints tokens/s, the ratio and the
model FLOPs utilisation (MFU) against a dense matmul ceiling measured in the same run.

Model FLOPs count the work the model needs, the same for both implementations: the matmuls
of every layer (including one language module per token) and attention, x3 for a training
step (forward + backward), plus the vocabulary projection at the scored positions only.
The reference computes vocabulary logits at every position; that waste shows as lower MFU.

Suites:
  train   masked-LM step (forward, backward, AdamW) at the small config: 4 x 256, vocab 32k,
          8 languages, batch 16 x 128, mixed languages. Reference fp32 (its bf16 autocast
          crashes) against ours fp32 and ours bf16 autocast.
  infer   encoder forward at xmod-base shape (12 x 768, vocab 250k, 81 languages, batch
          8 x 128, mixed languages), both models cast to bfloat16 (and fp32).
  mixed   cost of mixing languages: one-language batch against 8 and 81 languages per batch, at the
          xmod-base shape (8 x 128; 81 x 32 so that 81 languages fit) and at width 256 (81 x 64);
          the same batch every call (as every other row), and a new random mix every call.
  data    tokenize + pack + mask throughput against the training step's consumption.
  memory  peak memory (max RSS of a fresh process) of a base-shape training step.

bf16 rows run only where the device has bf16 products: on a CPU, where oneDNN has bf16 kernels (AVX-512 BW/VL/DQ
or AVX-NE-CONVERT; ``kernels.onednn_bf16``). On AVX2-only processors torch's own bf16 product is two orders of
magnitude slower than fp32 (0.65-0.7 against 48-68 GFLOP/s at 1024 x 1024 x 1024 on a 2-core AMD EPYC of family 23,
docs/results/amx-perf/round13/bf16-avx2-run*.txt), so an xmod-base forward
in bf16 would take minutes a call: the bf16 rows are left out with the reason printed and the bf16 product's rate
at 256 x 256 x 256 in the table, and the mixing-cost suite runs in fp32.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import XmodConfig
from ..files import atomic_write_text
from ..kernels import describe_paths, onednn_bf16
from ..model import XmodForMaskedLM, XmodModel
from ..settings import setting

SUITES = ("train", "infer", "mixed", "data", "memory")
DEVICE = torch.device("cpu")  # set by run()


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class BenchSettings:
    suite: list[str] = setting(list(SUITES), f"which measurements: {', '.join(SUITES)}")
    steps: int = setting(5, "timed calls per implementation (median reported)", low=1)
    warmup: int = setting(2, "untimed calls first", low=0)
    quick: bool = setting(False, "smaller shapes (a smoke test, not the targets' shapes)")
    out: str | None = setting(None, "also write the rows as JSON here")
    data: str = setting("", "corpus directory for the data suite (default: ../shared/data/ntrex or synthetic)")
    threads: int | None = setting(None, "torch.set_num_threads (default: torch's choice)")
    device: str = setting("cpu", "cpu or cuda (the targets are CPU ones; the GPU path has not been run here)")
    compile: bool = setting(False, "also time ours under torch.compile (train and infer suites)")


# ---------------------------------------------------------------------------------------
# Shapes, FLOPs and timing
# ---------------------------------------------------------------------------------------
def make_config(layers, hidden, vocab, n_languages, seq) -> XmodConfig:
    return XmodConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                      max_position_embeddings=seq + 2, type_vocab_size=1, layer_norm_eps=1e-5,
                      languages=[f"l{i:02d}_XX" for i in range(n_languages)])


def model_flops(config: XmodConfig, batch: int, seq: int, scored: int, train: bool) -> float:
    d, f, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * (4 * d * d + 2 * d * f + 2 * d * config.adapter_size)  # qkv+out, ffn, one module
    attention = 2 * 2 * seq * d  # scores and weighted sum, per token per layer
    flops = L * batch * seq * (per_token + attention)
    if scored:
        flops += scored * 2 * (d * d + d * config.vocab_size)  # LM head transform + vocabulary
    return flops * (3 if train else 1)


def median_times(fns: dict, steps: int, warmup: int) -> dict[str, float]:
    """Alternate the functions call by call, so both see the same machine."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, k: int = 1024, m: int = 1024, steps: int = 20) -> dict[str, float]:
    """Dense GEMM FLOP/s at a shape like the models' (tokens x hidden x 4*hidden), the fastest call of
    each CPU GEMM library torch reaches: torch.mm (MKL for fp32 on CPU) and oneDNN with the weight
    pre-packed (for bf16 only where oneDNN has bf16 kernels on this processor: not on AVX2 ones). The ceiling is
    the best of them: on AMD CPUs oneDNN's fp32 is about 2x MKL's."""
    a, b = torch.randn(n, k, dtype=dtype, device=DEVICE), torch.randn(k, m, dtype=dtype, device=DEVICE)
    candidates = {"torch.mm": lambda: a @ b}
    if DEVICE.type == "cpu" and torch.backends.mkldnn.is_available() and (dtype != torch.bfloat16 or onednn_bf16()):
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), n)
        candidates["oneDNN packed"] = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [None], "")
    rates = {}
    for name, fn in candidates.items():
        for _ in range(3):
            fn()
        sync()
        best = float("inf")
        for _ in range(steps):  # the fastest call: a ceiling, not a typical time
            start = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * n * k * m / best
    return rates


def reference_from(ours: torch.nn.Module, kind: str):
    """transformers' model sharing our tensors (no copy): built on the meta device, then assigned."""
    import transformers

    hf_config = transformers.XmodConfig(**{k: v for k, v in ours.config.to_dict().items()
                                           if k not in ("shared_module", "architectures")})
    cls = {"mlm": transformers.XmodForMaskedLM, "base": transformers.XmodModel}[kind]
    with torch.device("meta"):
        ref = cls(hf_config, add_pooling_layer=False) if kind == "base" else cls(hf_config)
    ref.load_state_dict(ours.state_dict(), strict=False, assign=True)
    if kind == "mlm":
        ref.tie_weights()
    for module in ref.modules():  # non-persistent buffers: position and token-type ids
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                value = torch.arange(buf.shape[-1]).expand(buf.shape) if name == "position_ids" else torch.zeros(buf.shape, dtype=buf.dtype)
                module.register_buffer(name, value.clone(), persistent=False)
    missing = [n for n, p in ref.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"reference parameters not shared: {missing[:4]}")
    ref.config._attn_implementation = "sdpa"
    return ref


def batch_for(config: XmodConfig, batch: int, seq: int, n_languages: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, config.vocab_size, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    lang = torch.arange(batch) % n_languages  # every row a language, interleaved: the worst order
    labels = torch.where(torch.rand(batch, seq, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    return ids, lang, labels


# ---------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------
def bf16_products() -> bool:
    """Whether the bench's device multiplies bf16 matrices at speed (see the module's docstring)."""
    return DEVICE.type != "cpu" or onednn_bf16()


def bench_train(s: BenchSettings, ceilings: dict) -> list[dict]:
    layers, hidden, vocab, langs, batch, seq = (2, 128, 8000, 8, 8, 64) if s.quick else (4, 256, 32000, 8, 16, 128)
    config = make_config(layers, hidden, vocab, langs, seq)
    torch.manual_seed(0)
    ours = XmodForMaskedLM(config).train()
    ref = XmodForMaskedLM(config)  # its own copy: the two optimizers must not share weights
    ref.load_state_dict(ours.state_dict())
    ref = reference_from(ref, "mlm").train().to(DEVICE)
    ours = ours.to(DEVICE)
    ids, lang, labels = (t.to(DEVICE) for t in batch_for(config, batch, seq, langs))

    def stepper(model, amp: bool, fused: bool):
        opt = torch.optim.AdamW([p for p in model.parameters()], lr=1e-5, fused=fused)

        def step():
            ctx = torch.autocast(DEVICE.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
            with ctx:
                loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    fns = {"reference fp32": stepper(ref, False, False), "ours fp32": stepper(ours, False, True)}
    if bf16_products():
        fns["ours bf16 autocast"] = stepper(ours, True, True)
    if s.compile and bf16_products():
        fns["ours bf16 autocast + compile"] = stepper(torch.compile(ours), True, True)
    times = median_times(fns, s.steps, s.warmup)
    flops = model_flops(config, batch, seq, int(labels.ne(-100).sum()), train=True)
    shape = f"MLM train step {layers}x{hidden} V={vocab // 1000}k {langs} langs {batch}x{seq}"
    return rows(shape, times, "reference fp32", batch * seq, flops, ceilings)


def bench_infer(s: BenchSettings, ceilings: dict) -> list[dict]:
    layers, hidden, vocab, langs, batch, seq = (2, 256, 32000, 81, 8, 64) if s.quick else (12, 768, 250002, 81, 8, 128)
    config = make_config(layers, hidden, vocab, langs, seq)
    torch.manual_seed(0)
    ours = XmodModel(config, add_pooling_layer=False).eval()
    ref = reference_from(ours, "base").eval()
    ours, ref = ours.to(DEVICE), ref.to(DEVICE)
    ids = batch_for(config, batch, seq, langs)[0].to(DEVICE)
    lang = (torch.tensor([0, 7, 3, 80, 41, 3, 12, 60][:batch]) % langs).to(DEVICE)

    def forward(model, autocast: bool = False):
        def call():
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
                return torch.no_grad()(model)(input_ids=ids, lang_ids=lang)
        return call

    # bf16 weights; fp32; and fp32 weights under bf16 autocast (what embed and retrieval's --precision bf16
    # run), against the reference in fp32: transformers' XmodModel fails under autocast (its language
    # adapters write bf16 rows into an fp32 tensor)
    # (a copy of ours for autocast: one model called both ways would repack its modules at every switch)
    fns = {"reference fp32": forward(ref), "ours fp32": forward(ours)}
    if bf16_products():
        ours16 = XmodModel(config, add_pooling_layer=False)
        ours16.load_state_dict(ours.state_dict())
        ours16 = ours16.to(torch.bfloat16).eval()
        ref16 = reference_from(ours16, "base").eval()
        ours16, ref16 = ours16.to(DEVICE), ref16.to(DEVICE)
        fns = {"reference bf16": forward(ref16), "ours bf16": forward(ours16), **fns,
               "ours bf16 autocast": forward(copy.deepcopy(ours), True)}
        if s.compile:  # the compiled module shares ours16's weights
            fns["ours bf16 + compile"] = forward(torch.compile(ours16))
    times = median_times(fns, s.steps, s.warmup)
    flops = model_flops(config, batch, seq, 0, train=False)
    shape = f"encoder forward {layers}x{hidden} V={vocab // 1000}k {langs} langs {batch}x{seq} mixed"
    out = rows(shape, {k: v for k, v in times.items() if "bf16" in k and "autocast" not in k}, "reference bf16",
               batch * seq, flops, ceilings) if bf16_products() else []
    out += rows(shape, {k: v for k, v in times.items() if "fp32" in k or "autocast" in k}, "reference fp32",
                batch * seq, flops, ceilings)
    return out


def bench_mixed(s: BenchSettings, ceilings: dict) -> list[dict]:
    out = []
    for layers, hidden, langs, batch, seq in ([(2, 256, 81, 81, 32)] if s.quick else
                                             [(12, 768, 81, 8, 128), (12, 768, 81, 81, 32), (4, 256, 81, 81, 64)]):
        config = make_config(layers, hidden, 1000, langs, seq)
        torch.manual_seed(0)
        dtype = torch.bfloat16 if bf16_products() else torch.float32  # fp32 where bf16 products crawl
        model = XmodModel(config, add_pooling_layer=False).to(dtype).to(DEVICE).eval()
        ids = batch_for(config, batch, seq, langs)[0].to(DEVICE)
        fns = {}
        for n in sorted({1, min(8, batch), min(langs, batch)}):
            lang = (torch.arange(batch) % n).to(DEVICE)
            fns[f"{n} language{'s' if n > 1 else ''}"] = (lambda lang=lang: torch.no_grad()(model)(ids, lang_ids=lang))
        # Serving: a new random mix every call (drawn with replacement, so segments are unequal), which
        # no cached packing of the modules can serve: the price of mixing when layouts never repeat.
        g = torch.Generator().manual_seed(1)
        draws = itertools.cycle([torch.randint(0, langs, (batch,), generator=g).to(DEVICE) for _ in range(3)])
        fns["random languages, new each call"] = lambda: torch.no_grad()(model)(ids, lang_ids=next(draws))
        times = median_times(fns, s.steps, s.warmup)
        flops = model_flops(config, batch, seq, 0, train=False)
        shape = f"mixing cost, encoder {'bf16' if dtype == torch.bfloat16 else 'fp32'} {layers}x{hidden} {batch}x{seq}"
        out += rows(shape, times, "1 language", batch * seq, flops, ceilings, higher_is_worse=True)
    return out


def bench_data(s: BenchSettings, ceilings: dict, train_rows: list[dict]) -> list[dict]:
    from .. import data as data_mod
    from .. import tokenizer as tok_mod

    corpus = Path(s.data) if s.data else Path(__file__).resolve().parents[4] / "shared" / "data" / "ntrex"
    tmp = None
    if not corpus.is_dir():
        import tempfile

        from ..synthetic import SyntheticWorld
        tmp = tempfile.TemporaryDirectory()
        corpus = Path(tmp.name)
        SyntheticWorld(0).write_corpora(corpus, [f"syn{i:02d}" for i in range(8)], 2000, 0)
    corpora = dict(list(data_mod.discover_corpora(corpus).items())[:8])
    tok = tok_mod.train_tokenizer(corpora, vocab_size=8000, seed=0)
    batches = data_mod.MLMBatches(corpora, tok, list(corpora), seq_len=128, batch_size=16, seed=0)
    next(batches)
    n = 20 if s.quick else 200
    start = time.perf_counter()
    for _ in range(n):
        next(batches)
    pipeline = n * 16 * 128 / (time.perf_counter() - start)
    consume = max((r["tokens_per_s"] for r in train_rows if r["impl"].startswith("ours")), default=None)
    row = {"shape": f"data pipeline (tokenize, pack, mask) {len(corpora)} languages 16x128", "impl": "ours",
           "seconds": 16 * 128 / pipeline, "tokens_per_s": pipeline,
           "ratio": pipeline / consume if consume else None, "mfu": None,
           "vs": "fastest ours train step (tokens/s)" if consume else None}
    if tmp:
        tmp.cleanup()
    return [row]


MEMORY_SCRIPT = """
import resource, sys, torch
from xmodlm.recipes.bench import make_config, batch_for, reference_from
from xmodlm.model import XmodForMaskedLM
from xmodlm.runtime import tune_allocator


def peak_bytes():
    # this process's own peak: VmHWM belongs to the memory map exec made; ru_maxrss keeps the forking parent's peak
    # across exec (a bench that had run the inference suite reported its own 8.92 GiB for both children)
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


tune_allocator()  # as the xmodlm command runs, for both implementations
layers, hidden, vocab, langs, batch, seq = map(int, sys.argv[2:8])
config = make_config(layers, hidden, vocab, langs, seq)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
if sys.argv[1] == "reference":
    model = reference_from(model, "mlm").train()
ids, lang, labels = batch_for(config, batch, seq, langs)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=sys.argv[1] == "ours")
for _ in range(2):
    model(input_ids=ids, lang_ids=lang, labels=labels).loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
print(peak_bytes())
"""


def bench_memory(s: BenchSettings) -> list[dict]:
    shape = (2, 256, 32000, 8, 8, 64) if s.quick else (12, 768, 250002, 8, 8, 128)
    peaks = {}
    for impl in ("reference", "ours"):
        result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, impl, *map(str, shape)],
                                capture_output=True, text=True, check=True)
        peaks[impl] = int(result.stdout.split()[-1])
    label = f"peak RSS, MLM train step {shape[0]}x{shape[1]} V={shape[2] // 1000}k {shape[3]} langs {shape[4]}x{shape[5]}"
    return [{"shape": label, "impl": impl, "seconds": None, "tokens_per_s": None, "bytes": b,
             "ratio": b / peaks["reference"], "mfu": None, "vs": "reference peak (lower is better)"}
            for impl, b in peaks.items()]


def rows(shape, times, baseline, tokens, flops, ceilings, higher_is_worse=False) -> list[dict]:
    out = []
    for impl, t in times.items():
        dtype = "bf16" if "bf16" in impl or "bf16" in shape else "fp32"
        ratio = (t / times[baseline]) if higher_is_worse else (times[baseline] / t)
        out.append({"shape": shape, "impl": impl, "seconds": t, "tokens_per_s": tokens / t, "ratio": ratio,
                    "dtype": dtype, "flops": flops, "mfu": flops / t / ceilings[dtype],
                    "vs": f"{'time vs' if higher_is_worse else 'speed vs'} {baseline}"})
    return out


def format_table(results: list[dict]) -> str:
    lines = ["| measurement | implementation | tokens/s | ratio | vs | MFU |", "|---|---|---:|---:|---|---:|"]
    for r in results:
        tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else (f"{r['bytes'] / 2**30:.2f} GiB" if r.get("bytes") else "")
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else ""
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else ""
        lines.append(f"| {r['shape']} | {r['impl']} | {tps} | {ratio} | {r.get('vs') or ''} | {mfu} |")
    return "\n".join(lines)


def run(s: BenchSettings) -> list[dict]:
    unknown = [x for x in s.suite if x not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; expected some of {SUITES}")
    global DEVICE
    DEVICE = torch.device(s.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {s.device}: CUDA is not available on this machine")
    if s.threads:
        torch.set_num_threads(s.threads)
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if bf16_products() else {})}
    rates = {dt: matmul_ceiling(dtype) for dt, dtype in dtypes.items()}
    ceilings = {dt: max(r.values()) for dt, r in rates.items()}
    results: list[dict] = []
    print(f"machine: {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"torch {torch.__version__}", flush=True)
    if not bf16_products():
        slow = matmul_ceiling(torch.bfloat16, 256, 256, 256, steps=3)["torch.mm"]
        results.append({"shape": "dense matmul 256x256x256", "impl": "bf16 torch.mm", "seconds": None,
                        "tokens_per_s": None, "ratio": None, "mfu": None,
                        "vs": f"{slow / 1e9:,.1f} GFLOP/s: no bf16 rows"})
        print(f"bf16 rows left out: oneDNN has no bf16 kernels on this processor (torch's own bf16 product "
              f"{slow / 1e9:.1f} GFLOP/s, fp32 {ceilings['fp32'] / 1e9:.0f})", flush=True)
    if DEVICE.type == "cpu":  # which kernels this processor and the switches select (AMX changes some)
        for part, path in describe_paths().items():
            print(f"  {part}: {path}", flush=True)
    train_rows: list[dict] = []
    for suite in s.suite:
        print(f"running {suite} ...", file=sys.stderr, flush=True)
        if suite == "train":
            train_rows = bench_train(s, ceilings)
            results += train_rows
        elif suite == "infer":
            results += bench_infer(s, ceilings)
        elif suite == "mixed":
            results += bench_mixed(s, ceilings)
        elif suite == "data":
            results += bench_data(s, ceilings, train_rows)
        elif suite == "memory" and DEVICE.type == "cpu":  # max RSS: a CPU measure
            results += bench_memory(s)
    if DEVICE.type == "cpu":  # the choices timed during the suites
        part = "weight gradients in fp32 training (CPU)"
        print(f"  {part}, after the suites: {describe_paths()[part]}", flush=True)
    # the ceiling again after the suites: a machine slowed while it was first measured would otherwise inflate every
    # MFU (a 2-core AVX2 EPYC read 45 GFLOP/s at the start of one run and 68-75 in the runs around it)
    after = {dt: matmul_ceiling(dtype) for dt, dtype in dtypes.items()}
    for dt in dtypes:
        for lib, c in after[dt].items():
            rates[dt][lib] = max(rates[dt][lib], c)
        ceilings[dt] = max(rates[dt].values())
    for r in results:
        if r.get("flops"):
            r["mfu"] = r["flops"] / r["seconds"] / ceilings[r["dtype"]]
    results = [{"shape": "dense matmul ceiling 2048x1024x1024 (faster of before and after)", "impl": f"{dt} {lib}",
                "seconds": None, "tokens_per_s": None, "ratio": None, "mfu": None,
                "vs": f"{c / 1e9:,.0f} GFLOP/s" + (" (the ceiling)" if c == ceilings[dt] else "")}
               for dt, r in rates.items() for lib, c in r.items()] + results
    print(format_table(results))
    if s.out:
        atomic_write_text(Path(s.out), json.dumps(results, indent=2) + "\n")
    return results
