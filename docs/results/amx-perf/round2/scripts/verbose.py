import torch, xmodlm
from xmodlm.model import XmodModel
from xmodlm.recipes.bench import batch_for, make_config
config = make_config(12, 768, 250002, 81, 128)
torch.manual_seed(0)
m = XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
with torch.no_grad():
    for _ in range(3): m(ids, lang_ids=lang)
    torch.backends.mkldnn.verbose(1) if False else None
    import os
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        m(ids, lang_ids=lang)
