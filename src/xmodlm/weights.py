"""Checkpoint weight files: ``model.safetensors`` written and read as transformers does, and hub ids.

A checkpoint directory holds ``config.json`` and the weights: ``model.safetensors``, a sharded
``model.safetensors.index.json`` with its shards, or a ``pytorch_model.bin`` (read weights-only,
never unpickling objects). Tensor names are transformers' (``roberta.encoder.layer.0...``), so the
directory loads in both libraries.

The functions take the model duck-typed, so that this module needs no model code: ``config``,
``state_dict()``, ``_tied_keys()`` (names that share another tensor and are stored once),
``base_model_prefix`` (the attribute holding the encoder in a model with a head), ``_backbone``
(the encoder's name prefixes), ``encoder_model`` (the model itself for the bare encoder) and
``tie_weights()``.

This module imports torch, safetensors, huggingface_hub (lazily, for hub ids), and config and files
from the package.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .config import XmodConfig
from .files import atomic_write, recover_dir

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


def resolve_pretrained(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub id downloaded (config, weights, tokenizer only)."""
    path = Path(name_or_path)
    recover_dir(path)  # an in-place edit (files.replace_dir) killed between its two renames
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/")) or name.count("/") > 1:
        raise FileNotFoundError(f"{name}: not a checkpoint directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"{name}: no such directory, and huggingface_hub is not installed to fetch it as a hub id "
            "(pip install 'xmodlm[hub]')"
        ) from None
    # Only data files: never code from a checkpoint repository.
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # offline, unknown id, gated repo: say which and why
        raise FileNotFoundError(f"{name}: not a local directory and could not be fetched from the hub ({e})") from e


def from_pretrained(cls, name_or_path: str | os.PathLike, *, allow_nonfinite: bool = False, **config_overrides):
    """A ``cls`` built from the config.json of a checkpoint directory (or hub id), with its weights
    (see ``load_checkpoint_weights``; ``allow_nonfinite=True`` loads NaN or infinite weights too)."""
    directory = resolve_pretrained(name_or_path)
    model = cls(XmodConfig.from_pretrained(directory, **config_overrides))
    load_checkpoint_weights(model, directory, allow_nonfinite=allow_nonfinite)
    return model


def check_finite(tensors, where: str) -> None:
    """Raise naming ``where`` and the first tensors that hold NaN or infinite values (name -> tensor)."""
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"{where}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {bad[:4]} (a diverged "
                         "run?); refusing to load them (pass allow_nonfinite=True to load anyway)")


def save_pretrained(model, directory: str | os.PathLike) -> None:
    """Write ``config.json`` and ``model.safetensors`` as transformers does (tied tensors once), each atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tied = model._tied_keys()
    # clone(): safetensors stores each tensor once; a shared module is written as copies.
    shared = model.config.shared_module
    state = {k: v.detach().clone().contiguous() if shared else v.detach().contiguous()
             for k, v in model.state_dict().items() if k not in tied}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    model.config.extra["architectures"] = [type(model).__name__]
    model.config.save_pretrained(directory)


def read_weights(directory: str | os.PathLike) -> tuple[list[Path], dict[str, tuple[torch.Tensor, Path]]]:
    """All tensors of a checkpoint directory, each with the file it came from, and the files read:
    safetensors (single or sharded) or a weights-only .bin. Errors name the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    single, index, bin_file = directory / WEIGHTS_NAME, directory / f"{WEIGHTS_NAME}.index.json", directory / "pytorch_model.bin"
    if single.exists():
        files = [single]
    elif index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e})") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
    elif bin_file.exists():
        try:
            state = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{bin_file}: cannot be read as a weights-only PyTorch file ({e})") from None
        return [bin_file], {k: (v, bin_file) for k, v in state.items()}
    else:
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}, sharded index or pytorch_model.bin")
    tensors = {}
    for file in files:
        try:
            for k, v in load_file(file).items():
                tensors[k] = (v, file)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{file}: corrupt or truncated safetensors file ({e})") from None
    return files, tensors


def load_checkpoint_weights(model, directory: str | os.PathLike, *, allow_nonfinite: bool = False) -> None:
    """Copy a checkpoint directory's tensors into ``model``, then tie its weights again.

    Encoder names map between the bare encoder (``encoder.…``) and a model with a head
    (``roberta.encoder.…``). Task-head weights absent from the checkpoint keep their initialisation
    (logged), other heads' tensors are ignored (logged); a missing encoder tensor, an encoder tensor
    without a place in the model, a shape mismatch or an unreadable file is an error naming the
    file and the tensor. NaN or infinite weights are refused unless ``allow_nonfinite``.
    """
    files, tensors = read_weights(directory)
    if not allow_nonfinite:
        check_finite({k: t for k, (t, _) in tensors.items()}, str(directory))
    prefix = "" if model.encoder_model is model else model.base_model_prefix + "."
    tied = model._tied_keys()
    expected = {k: v for k, v in model.state_dict().items() if k not in tied}
    provided: dict[str, tuple[torch.Tensor, Path]] = {}
    ignored = []
    for key, (tensor, file) in tensors.items():
        base = key[len("roberta."):] if key.startswith("roberta.") else key
        target = prefix + base if base.startswith(model._backbone) else key
        if target in expected:
            provided[target] = (tensor, file)
        elif target in tied or key.startswith(("lm_head.decoder.")):
            continue
        elif base in ("embeddings.position_ids", "embeddings.token_type_ids"):
            continue  # buffers that transformers < 4.31 saved (facebook/xmod-base has position_ids)
        elif base.startswith(model._backbone) and not base.startswith("pooler."):
            raise ValueError(
                f"{file}: tensor {key!r} has no place in this model (languages {model.config.languages}); "
                "is config.json from another checkpoint?"
            )
        else:
            ignored.append(key)
    missing = [k for k in expected if k not in provided]
    missing_backbone = [k for k in missing if k[len(prefix):].startswith(("embeddings.", "encoder."))]
    if missing_backbone:
        raise ValueError(f"{files[0].parent}: missing encoder tensors {missing_backbone[:8]}"
                         f"{' ...' if len(missing_backbone) > 8 else ''} (files: {[f.name for f in files]})")
    if missing:
        logger.info("initialised fresh (not in the checkpoint): %s", missing)
    if ignored:
        logger.info("ignored checkpoint tensors of other heads: %s", ignored)
    with torch.no_grad():
        for key, (tensor, file) in provided.items():
            param = expected[key]
            if tuple(tensor.shape) != tuple(param.shape):
                raise ValueError(
                    f"{file}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects {tuple(param.shape)}"
                )
            param.copy_(tensor)
    model.tie_weights()
