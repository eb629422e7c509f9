"""Tiny random X-Mod models shared by the parity and checkpoint tests: 2 layers, width 32,
vocab 100, 3 languages, dropout off, every weight random (norm gains around 1) so that no weight
can pass a comparison by sitting at its initial value. Also their inputs, and a pickle payload that
the checkpoint readers must refuse."""

from pathlib import Path

import torch

from xmodlm.config import preset
from xmodlm.model import XmodForMaskedLM

LANGS = ["en_XX", "de_DE", "fr_XX"]
VOCAB = 100
TOL = 1e-5  # max abs difference against the reference, float32


def tiny_config(**overrides):
    kw = dict(vocab_size=VOCAB, languages=list(LANGS), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return preset("tiny", **{**kw, **overrides})


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(1.0 + 0.2 * noise if name.endswith(("LayerNorm.weight", "layer_norm.weight")) else 0.2 * noise)
    return model.eval()


def ours(cls=XmodForMaskedLM, seed=0, **overrides):
    torch.manual_seed(seed)
    return randomize(cls(tiny_config(**overrides)), seed)


def inputs(b=4, t=10):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones(b, t, dtype=torch.long)
    ids[1, 6:], mask[1, 6:] = 1, 0
    return ids, mask, torch.tensor([2, 0, 1, 2][:b])


def touch(path):
    Path(path).touch()


class WritesAFile:
    """A pickle payload: unpickling it with weights_only=False would create ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (touch, (self.path,))


def spy_weight_gradients(monkeypatch) -> list[str]:
    """The fp32 weight gradient's formulations (``kernels.linear.WEIGHT_GRADIENTS``), each noting its name in the
    returned list when it runs: which one ran, where their bits can be the same."""
    from xmodlm.kernels import linear

    ran, forms = [], dict(linear.WEIGHT_GRADIENTS)
    monkeypatch.setattr(linear, "WEIGHT_GRADIENTS", {name: (lambda g2, x2, name=name: ran.append(name) or
                                                            forms[name](g2, x2)) for name in forms})
    return ran
