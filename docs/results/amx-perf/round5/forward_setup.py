"""The infer suite's bf16 forward, as benchmarks/infer_breakdown.py builds it: xmod-base shape, 81 languages,
8 x 128 tokens, 7 languages in the batch (one twice). For the scripts beside this one."""

import torch

import xmodlm
import xmodlm.model as model_mod
from xmodlm.recipes.bench import batch_for, make_config


def xmod_base_forward():
    """(model, input ids, language ids), the allocator tuned as the CLI does."""
    xmodlm.tune_allocator()
    config = make_config(12, 768, 250002, 81, 128)
    torch.manual_seed(0)
    model = model_mod.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
    return model, batch_for(config, 8, 128, 81)[0], torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
