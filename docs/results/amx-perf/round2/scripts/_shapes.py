"""The two shapes every script here measures (the bench's): the xmod-base-shaped encoder in bf16 with 8 sequences
of 128 tokens in mixed languages, and the small masked-LM training step (4 x 256, 8 languages, 16 x 128)."""
import torch

import xmodlm
from xmodlm.model import XmodForMaskedLM, XmodModel
from xmodlm.recipes.bench import batch_for, make_config

xmodlm.tune_allocator()


def encoder_bf16():
    """(config, bf16 XmodModel in eval mode, input ids, language ids)."""
    config = make_config(12, 768, 250002, 81, 128)
    torch.manual_seed(0)
    model = XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
    return config, model, batch_for(config, 8, 128, 81)[0], torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])


def mlm_small():
    """(config, XmodForMaskedLM in train mode, ids, language ids, labels, fused AdamW)."""
    config = make_config(4, 256, 32000, 8, 128)
    torch.manual_seed(0)
    model = XmodForMaskedLM(config).train()
    ids, lang, labels = batch_for(config, 16, 128, 8)
    return config, model, ids, lang, labels, torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
