"""Round 8's dropout mask (native.c, native.py and dropout.py as of 3cfeab4: numpy's SeedSequence words, one scalar
SFC64 chain per 262,144 draws) beside the code as it is (the words hashed in C, 8 streams of 32,768 draws in vector
lanes), for keep_mask_alone.py and keep_mask_step.py: the old library built from the old source by the old native.py
under a temporary XMODLM_KERNEL_CACHE, the old native.py and dropout.py loaded as modules of xmodlm.kernels (the old
dropout's native the old one). use() also points the current native module at the variant's library, for the
other kernels of a training step (the same code in both).
"""

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

from xmodlm.kernels import dropout, native

ROUND8 = "3cfeab4"
ROOT = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=Path(__file__).parent, check=True,
                           capture_output=True, text=True).stdout.strip())


def old_source(path: str) -> str:
    return subprocess.run(["git", "show", f"{ROUND8}:{path}"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def module(name: str, path: str):
    spec = importlib.util.spec_from_loader(f"xmodlm.kernels.{name}", loader=None)
    loaded = importlib.util.module_from_spec(spec)
    loaded.__package__ = "xmodlm.kernels"
    loaded.__file__ = str(Path(native.__file__).with_name(f"{name}.py"))  # not read: native's SOURCE is set after
    exec(compile(old_source(path), f"{name}.py", "exec"), loaded.__dict__)
    return loaded


def load() -> dict:
    """{"round 8": (old native module, its library, keep_draws), "now": (native, its library, keep_draws)}."""
    folder = tempfile.mkdtemp()
    os.environ["XMODLM_KERNEL_CACHE"] = folder
    old_native = module("native_round8", "src/xmodlm/kernels/native.py")
    old_native.SOURCE = Path(folder) / "native_round8.c"
    old_native.SOURCE.write_text(old_source("src/xmodlm/kernels/native.c"))
    old_dropout = module("dropout_round8", "src/xmodlm/kernels/dropout.py")
    old_dropout.native = old_native
    for loaded in (old_native, native):
        if not loaded.available():
            raise SystemExit(loaded.reason())
    assert old_dropout.MASK_CHUNK == 1 << 18 and dropout.MASK_CHUNK == 1 << 15
    return {"round 8": (old_native, old_native._STATE["lib"], old_dropout.keep_draws),
            "now": (native, native._STATE["lib"], dropout.keep_draws)}


def use(variants: dict, name: str, kernel: bool = True):
    """The variant's keep_draws, its library (native's too, for the rest of a step) or its numpy path (kernel False)."""
    owner, library, keep_draws = variants[name]
    native._STATE["lib"] = library
    for loaded in (owner, native):
        loaded._STATE["enabled"] = kernel
    return keep_draws
