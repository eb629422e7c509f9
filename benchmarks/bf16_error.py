"""How far bf16 inference is from fp32: the last hidden state and the masked-LM logits of ``xmodlm bench``'s infer
shape (12 x 768, vocab 250k, 81 languages, 8 x 128 mixed), computed by the fp32 model, by the same weights
converted to bf16 (``model.to(torch.bfloat16)``: what the bench's bf16 rows run) and by the fp32 model under bf16
autocast, each against the fp32 model in float64 arithmetic as the yardstick.

    python3 benchmarks/bf16_error.py [--rows 128]

Random weights (the bench's initialisation) and random token ids: trained weights cannot be fetched here, and
errors of trained models differ (larger activations, outlier dimensions), so read these as the paths' arithmetic,
not as a trained model's accuracy. Logits at ``--rows`` positions (every vocabulary row), as the MLM head computes
them at scored positions.
"""

from __future__ import annotations

import argparse

import torch

from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config


def errors(value: torch.Tensor, reference: torch.Tensor) -> str:
    diff = (value.double() - reference).abs()
    return (f"max abs {diff.max().item():.3g}, max abs / max |ref| {diff.max().item() / reference.abs().max().item():.3g}, "
            f"relative RMS {diff.norm().item() / reference.norm().item():.3g}")


def outputs(model, ids, lang, rows: int, autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        h = model.roberta(ids, lang_ids=lang).last_hidden_state
        logits = model.lm_head(h.reshape(-1, h.shape[-1])[:rows])
    return h, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128, help="positions whose logits are compared")
    args = parser.parse_args()
    config = make_config(12, 768, 250002, 81, 128)
    torch.manual_seed(0)
    fp32 = XmodForMaskedLM(config).eval()
    ids = batch_for(config, 8, 128, 81)[0]
    lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])  # as the bench
    exact = XmodForMaskedLM(config)
    exact.load_state_dict(fp32.state_dict())
    exact = exact.double().eval()
    ref_h, ref_logits = outputs(exact, ids, lang, args.rows)
    del exact
    results = {"fp32": outputs(fp32, ids, lang, args.rows),
               "fp32 weights, bf16 autocast": outputs(fp32, ids, lang, args.rows, autocast=True)}
    bf16 = fp32.to(torch.bfloat16)  # in place: the fp32 results are taken
    results["bf16 model (the bench's bf16 rows)"] = outputs(bf16, ids, lang, args.rows)
    print(f"against float64, {torch.get_num_threads()} thread(s); last hidden state 8 x 128 x 768, "
          f"logits {args.rows} x {config.vocab_size}")
    for name, (h, logits) in results.items():
        print(f"{name}:\n  last hidden state: {errors(h, ref_h)}\n  MLM logits: {errors(logits, ref_logits)}")


if __name__ == "__main__":
    main()
