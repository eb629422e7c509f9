"""Which paths the kernels take on this machine with the current switches, in words (``xmodlm bench`` prints them)."""

from __future__ import annotations

import torch

from .amp import _AUTOCAST_LINEAR, _VOCAB, _VOCAB_LOSS, native_weight_grad_on, onednn_bf16
from .cpu import amx_bf16, amx_overridden
from .linear import _ONEDNN
from .dropout import _ONE_PASS
from .loss import _FUSED
from . import native
from .attention import native_training_on
from .gelu import table_gelu_on
from .module_training import native_training_modules_on
from .residual_norm import bf16_twin_on, fused_residual_norm_on
from .tied import _ROWS
from .tune import _TUNE, choices


def weight_choices() -> str:
    """The fp32 weight gradients' formulations chosen in this process, by weight shape (out x in)."""
    made = {f"{key[2]}x{key[1]}": name for key, name in choices().items() if key[0] == "weight gradient"}
    return ", ".join(f"{shape} {name}" for shape, name in sorted(made.items())) or "none yet"


def describe_paths() -> dict[str, str]:
    """One entry per choice the kernels make by processor or switch."""
    onednn = _ONEDNN["enabled"] and _ONEDNN["available"]
    onednn16 = onednn and onednn_bf16()  # oneDNN's bf16 kernels in use (absent on AVX2-only processors)
    return {
        "cpu": (f"torch capability {torch.backends.cpu.get_cpu_capability()}, "
                f"AMX bf16 {'yes' if amx_bf16() else 'no'}{' (prefer_amx_paths override)' if amx_overridden() else ''}, "
                f"oneDNN bf16 kernels {'yes' if onednn_bf16() else 'no (bf16 products in torch ops)'}"),
        "linears (CPU)": "oneDNN (fused epilogues, packed weights in inference)" if onednn else "plain torch",
        "weight gradients in fp32 training (CPU)": (("oneDNN or BLAS's gemm, timed once per weight shape (from "
                                                     f"{_TUNE['min_rows']} tokens; chosen so far: {weight_choices()})"
                                                     if _TUNE["enabled"] else "oneDNN") if onednn else "plain torch"),
        "bf16 autocast inference (CPU)": ("the fused kernels on bf16 weights cast once and cached"
                                          if onednn16 else "torch's ops, autocast's casts at every call"),
        "bf16 inference attention": ("SDPA (oneDNN off)" if not onednn else "SDPA (no oneDNN bf16 kernels)"
                                     if not onednn_bf16() else
                                     "own AMX kernel for heads of a multiple of 32 values, else SDPA flash kernel"
                                     if native.available() else "SDPA flash kernel (AMX)" if amx_bf16()
                                     else "own vector kernel (AVX-512 bf16 products) for heads of a multiple of 32 "
                                     "values, else bf16_attention (hi + lo scores) up to 128 tokens"
                                     if native.vector_available()
                                     else "bf16_attention (hi + lo scores) up to 128 tokens"),
        "bf16 inference products (CPU)": (f"{'own AMX kernel, rows split' if native.available() else 'fused'}; "
                                          "timed once per shape against the fused call, row blocks, the transposed "
                                          f"product or a separate activation (from {_TUNE['min_rows']} rows)"
                                          if _TUNE["enabled"] and onednn16 else "fused" if onednn16
                                          else "torch's ops (oneDNN off or without bf16 kernels)"),
        "own AMX kernel, bf16 inference (CPU)": (("built; the language modules' segments in one call each, the "
                                                  "linears' default, post-norms in the products' calls")
                                                 if onednn and native.available()
                                                 else f"not used: {native.reason() if _ONEDNN['enabled'] else 'oneDNN off'}"),
        "own vector kernels (CPU; AVX-512 with bf16, AMX or not)": (
            "built: LayerNorm in bf16 inference" + ("" if native.available() else
                                                   ", without AMX the language modules' segments in one call each")
            + "; in bf16 autocast training the residual norms, GELU's tables, dropout's "
            "masks, the cross-entropy over bf16 logits" if native.vector_available()
            else f"not used: {native.vector_reason()}"),
        "MLM cross-entropy in training": (("fused: " + ("bf16 logits in the own kernel, " if native.vector_available() else "")
                                           + "16-row slices on CPU, one slice elsewhere") if _FUSED["enabled"]
                                          else "plain F.cross_entropy"),
        "tied word embeddings' gradient in training": ("lookup rows added into the decoder's (CPU)" if _ROWS["enabled"]
                                                       else "dense lookup gradient, summed"),
        "attention in bf16 training (CPU)": (
            "own AMX kernel, one call each way (heads of a multiple of 32 values, the package's Dropout)"
            if native_training_on() and native.available()
            else "own vector kernel (AVX-512 bf16 pair products), one call each way (heads of a multiple of 32 values "
                 "up to 256, T up to 512, the package's Dropout)"
            if native_training_on() and native.vector_available()
            else "dropout_attention (own kernel " + ("switched off)" if native.vector_available()
                                                     else f"not used: {native.vector_reason()})")),
        "Dropout's mask and scale in training": (("one pass each way" if _ONE_PASS["enabled"] else "two multiplications")
                                                 + "; masks drawn " + ("in the own kernel" if native.vector_available()
                                                                       else "in numpy")),
        "LayerNorm(dropout(h) + residual) in bf16 autocast training (CPU)": (
            "own kernel, one call each way" + ("; the next products read its bf16 copy" if bf16_twin_on() else "")
            if fused_residual_norm_on() and native.vector_available()
            else "torch's ops (own kernel " + ("switched off)" if native.vector_available() else f"not used: {native.vector_reason()})")),
        "linears in bf16 autocast training (CPU)": (
            ("bias inside oneDNN's product" + ("; weight and bias gradients in the own AMX kernel (float32)"
                                               if native_weight_grad_on() and native.available() else
                                               "; weight and bias gradients in the own vector kernel (AVX-512 bf16 "
                                               "products, float32)" if native_weight_grad_on()
                                               and native.vector_available() else ""))
            if _AUTOCAST_LINEAR["enabled"] and onednn16 else "autocast's F.linear (addmm)"),
        "tied decoder in bf16 autocast training (CPU)": (
            "own AMX kernel on the float32 weight (no casts of the matrix; dW, db float32)"
            + ("; the masked-LM loss fused into it (row statistics in its forward, the loss's gradient formed in its "
               "backward)" if _VOCAB_LOSS["enabled"] and _FUSED["enabled"] else "")
            if _VOCAB["enabled"] and native.available() else "as the other linears (autocast's casts of the matrix)"),
        "GELU in bf16 autocast training (CPU)": (
            "the own kernels' tables of every bf16 value (forward and backward)"
            if table_gelu_on() and native.vector_available()
            else "torch's gelu and gelu_backward"),
        "language modules in bf16 autocast training (CPU)": (
            "own AMX kernel, one call each way for all languages (float32 weights read directly; dW, db float32)"
            if native_training_modules_on() and native.available()
            else "batched or looped matmuls under autocast (own kernel "
            + ("switched off)" if native.available() else f"not used: {native.reason()})")),
    }
