import torch
from _shapes import encoder_bf16
config, m, ids, lang = encoder_bf16()
with torch.no_grad():
    for _ in range(3): m(ids, lang_ids=lang)
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        m(ids, lang_ids=lang)
