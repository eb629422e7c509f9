"""Side-by-side speed of xmodlm's X-Mod and transformers' XmodForMaskedLM, on the same weights.

Two tasks, on a batch of mixed languages (the reference's routing loops over every language
in every layer; ours regroups the batch once):
  encoder   XmodModel forward, eval mode, no_grad
  mlm-step  masked-LM forward + backward + AdamW step (15% of positions scored), train mode
Each is timed after warm-up iterations, the two implementations alternating call by call;
the table gives the median of --steps iterations and tokens/s = batch x seq / median.

    python3 benchmarks/bench_model.py                      # 4 x 256, vocab 32k, 8 languages, 16 x 128
    python3 benchmarks/bench_model.py --bf16 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=None, help="default: hidden / 64")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--languages", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed iterations per task (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="run under torch.autocast(bfloat16)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_models(args):
    """Ours, randomly initialised, and the reference loaded from our save_pretrained directory."""
    import transformers

    from xmodlm.config import XmodConfig
    from xmodlm.model import XmodForMaskedLM

    languages = [f"l{i:02d}_XX" for i in range(args.languages)]
    config = XmodConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads or max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
        max_position_embeddings=args.seq + 2, type_vocab_size=1, layer_norm_eps=1e-5, languages=languages,
    )
    torch.manual_seed(args.seed)
    ours = XmodForMaskedLM(config)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        ref = transformers.XmodForMaskedLM.from_pretrained(tmp, attn_implementation="sdpa")
    return ours.to(args.device), ref.to(args.device), config


def make_batch(args, config):
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(3, config.vocab_size, (args.batch, args.seq), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    lang = torch.randint(0, args.languages, (args.batch,), generator=g)  # mixed languages
    scored = torch.rand(args.batch, args.seq, generator=g) < 0.15
    labels = torch.where(scored, ids, torch.full_like(ids, -100))
    mask = torch.ones_like(ids)
    return [t.to(args.device) for t in (ids, mask, lang, labels)]


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_pair(fns: dict, args) -> dict[str, float | str]:
    """Median seconds per call for each implementation, or the error it raised.

    The implementations alternate call by call, so that a machine whose load drifts (a shared
    CPU) slows both alike instead of whichever happened to run second.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    failed: dict[str, str] = {}
    for i in range(args.warmup + args.steps):
        for name, fn in fns.items():
            if name in failed:
                continue
            try:
                sync(args.device)
                start = time.perf_counter()
                fn()
                sync(args.device)
            except Exception as e:  # noqa: BLE001 - the reference fails under bf16 autocast; report it
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:70]}"
                continue
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    return {name: failed.get(name) or statistics.median(times[name]) for name in fns}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, ref, config = build_models(args)
    ids, mask, lang, labels = make_batch(args, config)
    device_type = torch.device(args.device).type
    amp = (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext

    ours.eval(), ref.eval()
    with torch.no_grad():
        diff = (ours.roberta(ids, mask, lang).last_hidden_state
                - ref.roberta(input_ids=ids, attention_mask=mask, lang_ids=lang).last_hidden_state).abs().max()
    assert diff < 1e-4, f"the two implementations disagree (max abs diff {diff:.2e}); not benchmarking"

    def encoder(model, reference):
        def step():
            with torch.no_grad(), amp():
                if reference:
                    model.roberta(input_ids=ids, attention_mask=mask, lang_ids=lang)
                else:
                    model.roberta(ids, mask, lang)
        return step

    def mlm_step(model, reference):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step():
            with amp():
                if reference:
                    loss = model(input_ids=ids, attention_mask=mask, lang_ids=lang, labels=labels).loss
                else:
                    loss = model(ids, mask, lang, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    tokens = args.batch * args.seq
    rows = []
    for task, make, train in (("encoder", encoder, False), ("mlm-step", mlm_step, True)):
        ours.train(train), ref.train(train)
        results = time_pair({"xmodlm": make(ours, False), "transformers": make(ref, True)}, args)
        for name, value in results.items():
            rows.append((task, name, value))
        a, b = results["xmodlm"], results["transformers"]
        rows.append((task, "speed-up", b / a if isinstance(a, float) and isinstance(b, float) else None))

    where = torch.cuda.get_device_name() if device_type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {args.device} ({where}), "
          f"torch {torch.__version__}, {'bf16 autocast' if args.bf16 else 'float32'}")
    print(f"model {args.layers} x {args.hidden}, {config.num_attention_heads} heads, vocab {args.vocab}, "
          f"{args.languages} languages; batch {args.batch} x {args.seq} = {tokens} tokens, mixed languages; "
          f"median of {args.steps} after {args.warmup} warm-up")
    print(f"{'task':<10} {'implementation':<16} {'ms/iter':>10} {'tokens/s':>12}")
    for task, name, value in rows:
        if name == "speed-up":
            print(f"{task:<10} {'xmodlm speed-up':<16} {f'{value:.2f}x' if value else 'n/a':>10}")
        elif isinstance(value, float):
            print(f"{task:<10} {name:<16} {value * 1e3:>10.1f} {tokens / value:>12,.0f}")
        else:
            print(f"{task:<10} {name:<16} {'failed':>10}  {value}")


if __name__ == "__main__":
    main()
