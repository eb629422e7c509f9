"""How the model is made fast: the execution strategy behind ``xmodlm.model``, which states what
X-Mod computes and calls in here. These files import torch and numpy only, never the model.

Why oneDNN on CPU: torch's float32 matrix product on CPU is MKL's, which takes a slower code path on
AMD processors; oneDNN (in torch's build) does not. So on CPU, while oneDNN is in the build (bf16 only where
oneDNN has bf16 kernels on the processor, ``onednn_bf16()``: AVX-512 BW/VL/DQ or AVX-NE-CONVERT; on AVX2-only
processors its bf16 calls fail, and bf16 runs in torch's own ops):

* inference (eval mode, no autograd), fp32 or bf16: one oneDNN call per linear (``linear.linear``),
  with the activation or the residual add applied inside it on the fp32 accumulator; the big shared
  matrices are reordered once into oneDNN's blocked layout. Under CPU bf16 autocast (fp32 weights)
  the same kernels run on bf16 copies of the weights made once and cached, where autocast would cast
  every weight at every call; the residual stream stays fp32, as autocast keeps it.
* fp32 training (autograd, no autocast): forward and the input's gradient through oneDNN (``OneDNNLinear``); the
  weight's gradient through oneDNN or BLAS's gemm on the transposed operands (no copies), timed once per weight
  shape (``linear.weight_gradient``, ``tune``).
* bf16 inference over many rows (``tune``): where a shape is first met, the fused call is timed against
  an equivalent formulation (the transposed product for a linear with a residual, the activation as
  its own pass for an activated one) and the faster kept for that shape and thread count, like
  cudnn.benchmark; oneDNN's split of some shapes between threads leaves a thread idle.
* bf16 autocast training on CPU (``amp.autocast_linear``): autocast's casts, then the product in oneDNN
  with the bias added inside it (``addmm`` first fills the output with the bias), backward as ``addmm``'s
  (on AMX processors the weight's and bias's gradients in the own kernel, ``native.weight_grad``: summed in
  float32 and left in float32, where autocast rounds them to bf16); the tied decoder (vocabulary x width) on AMX processors in the own kernel (``amp.native_vocab_projection``),
  which reads the float32 matrix and rounds it to bf16 as it packs it (no cast of the matrix, no cast of its
  gradient back): the same logits and input gradient, the matrix's and bias's gradients summed in float32 and
  not rounded to bf16 (more precise than autocast's); the masked-LM loss on its logits fused into it
  (``amp.use_fused_vocab_loss``): the forward gives each row's softmax max and sum, the backward forms dlogits
  from the logits as it reads them (no pass of the loss over the logits, no dlogits written and read again).
* the per-language modules (``modules.run_language_modules``): one language (or one shared module)
  as its two linears over the whole batch, the residual fused in inference; many segments as padded
  batched matmuls over stacked weights; in CPU inference a batch layout seen twice in a row as two
  grouped 1x1 convolutions on packed weights, else a loop of direct kernel calls writing into one
  output. Where none applies (autograd over few segments, or oneDNN off) the model's own
  per-language loop runs.
* attention (``attention.attention``): torch's scaled_dot_product_attention, except bf16 inference
  through the own kernel on heads of a multiple of 32 values (``native.attention``: the AMX kernel, or
  without AMX its AVX-512 twin), else of sequences up to 128 tokens on processors without AMX
  (``bf16_attention``: float32-grade scores
  from two bf16 products; with AMX, SDPA's flash kernel is faster at the same precision) and CPU
  training with attention dropout (``dropout_attention``, with the faster mask); in bf16 training on AMX
  processors the own kernel (``native_training_attention``: one C call forward and one backward, float32 scores
  and softmax, the dropout's mask applied inside, the probabilities recomputed in the backward from each row's
  saved softmax constants, the fused projection's gradient written in its own layout).
* the masked-LM cross-entropy in training (``loss.scored_cross_entropy``): one autograd function
  that computes the loss and its gradient from one float32 softmax, a slice of rows at a time (bf16 logits on
  AMX processors: all rows in one call of the own kernel, ``native.cross_entropy``).
* LayerNorm(dropout(h) + residual) after the residual linears in bf16 autocast training on AMX processors
  (``residual_norm.dropout_residual_norm``): one call of the own kernel each way instead of six torch ops; it
  writes its output in bf16 too, the copy the next products read instead of autocast's cast (``bf16_twin``).
* GELU in bf16 autocast training on AMX processors (``gelu.table_gelu``): the bf16 activation's GELU and its
  derivative looked up in tables of every bf16 value (float64 values rounded once) by the own kernel, one gather per
  16 values, instead of torch's erf per value.
* ``Dropout``: the keep mask from numpy's SFC64 generator instead of torch's bernoulli (one stream per 2^18
  draws, in the own kernel on all threads where it is built, the same bits in numpy elsewhere), applied with its
  scale in one pass each way (``dropout._MaskAndScale``).
* the tied word embeddings in training (``tied``): the lookup's rows added in place into the decoder's
  dense gradient of the matrix, instead of a zero-filled vocabulary-sized matrix and a sum.
* own kernels for bf16 inference on processors with AMX (``native``: ``native.c``, plain C built on first
  use by the system's C compiler and loaded through ctypes; nothing changes where it cannot be built):
  the language modules' segments in one call per product, attention (heads read in place, no layout
  copies), LayerNorm (``norm.LayerNorm``, the model's norms; after a product, in the product's call), and
  each linear's default formulation, timed against oneDNN's.

What is cached, for inference only (``INFERENCE_CACHE``, outside the modules, so that state_dict,
deepcopy and pickling never see it): the big shared matrices in oneDNN's layout or the own kernel's,
whichever the linear's timed formulation reads (one extra copy of the encoder's dense weights, not of
the embeddings; the language modules used in bf16 inference on AMX each in the own kernel's layout),
keyed on their first linear; the language modules' weights stacked (batched path) or packed as grouped-convolution
weights (grouped path, built on a layout's second call in a row), keyed on the owning layer; under
bf16 autocast these copies are bf16 (half the size; a model called both ways keeps both packed
matrices, while its grouped module weights are rebuilt when the calls switch). An entry is rebuilt when
a weight is replaced or changed in place; ``drop_inference_cache`` (which ``model.train()`` calls)
drops them.

Exactness: the same computations, not approximations. Against the plain torch ops, the fused paths
round differently: the activation or residual is applied to the fp32 accumulator before rounding
(bf16: one rounding where the plain path rounds the product first), the grouped and batched paths
sum in another order, bf16 attention keeps float32-grade scores where a bf16 matmul would round
them, and ``Dropout`` rounds p to a multiple of 1/65536. The own kernels compute GELU's erf and softmax's
exponential by polynomials (relative error below 2e-7, far under bf16's 4e-3; GELU's far negative tail
is more accurate than torch's float32 one, which loses it to cancellation), float32 LayerNorm statistics
as torch's, and sum a row's probabilities before rounding them, as torch's flash kernel; they keep float32
denormals out of their hot loops (the products run with them flushed to zero, softmax's exponentials below
2^-126 count as 0: values below 1.2e-38, which bf16's conversion flushes anyway, where the processor would
take them in microcode, several times slower); the tests hold
them to one bf16 rounding of float32 (products, LayerNorm) or to torch's bf16 error (attention, the
model). fp32 results agree with the plain path to
float32 rounding; bf16 results are no further from fp32 than the plain bf16 path (the tests check
both); the tied lookup's row gradient sums the same float32 terms in another order.
``use_onednn(False)`` switches all of oneDNN off (plain torch ops), ``use_fused_cross_entropy(False)``
the fused cross-entropy, ``use_tied_row_gradient(False)`` the tied lookup's row gradient,
``use_one_pass_dropout(False)`` the one-pass mask and scale, ``use_autocast_linear(False)`` the bf16
autocast linears' bias inside the product, ``use_native_training_attention(False)`` the own training
attention kernel, ``use_native_vocab_projection(False)`` the tied decoder's product in bf16 autocast training in
the own kernel on the float32 weight (no casts of the matrix, its gradient float32), ``use_fused_vocab_loss(False)``
the masked-LM loss fused into it,
``use_native_training_modules(False)`` the language modules in bf16 autocast training in the own kernel (one call
each way for all languages of a layer, the float32 weights read directly, their gradients float32),
``use_fused_residual_norm(False)`` the own LayerNorm(dropout(h) + residual) in training, ``use_bf16_twin(False)``
the bf16 copy of its output that the next products read instead of autocast's cast,
``use_amx_kernels(False)`` all the own kernels (``native.reason()`` says why they are or are not in use),
``use_autotune(False)`` the timed choice (without it, bf16
outputs can differ in the last bit between processes that chose differently), and
``prefer_amx_paths(True / False / None)`` overrides the AMX detection (``cpu.amx_bf16``);
``describe_paths`` says which paths are taken.
Under ``torch.compile`` the plain ops are traced.

The submodules ``linear`` and ``attention`` keep their names here (their entry functions share
them): call ``kernels.linear.linear`` and ``kernels.attention.attention``.
"""

from .amp import (SLOW_BF16, onednn_bf16, use_autocast_linear, use_fused_vocab_loss, use_native_vocab_projection,
                  use_native_weight_grad)
from .cpu import amx_bf16, prefer_amx_paths
from .dropout import Dropout, use_one_pass_dropout
from .gelu import use_table_gelu
from .linear import (
    ACTIVATIONS,
    INFERENCE_CACHE,
    ONEDNN_ACTIVATIONS,
    OneDNNLinear,
    activation,
    drop_inference_cache,
    fusable,
    onednn_trainable,
    packed_weights,
    use_onednn,
)
from .attention import bf16_attention, dropout_attention, use_native_training_attention
from .loss import scored_cross_entropy, use_fused_cross_entropy
from .modules import run_language_modules
from .module_training import use_native_training_modules
from .native import use_amx_kernels
from .residual_norm import use_bf16_twin, use_fused_residual_norm
from .norm import LayerNorm
from .paths import describe_paths
from .tied import embedding_lookup, use_tied_row_gradient
from .tune import (autotune_enabled, choices as tune_choices, on_new_choice as on_new_tune_choice,
                   restore_choices as restore_tune_choices, use_autotune)

__all__ = [
    "ACTIVATIONS",
    "SLOW_BF16",
    "Dropout",
    "INFERENCE_CACHE",
    "LayerNorm",
    "ONEDNN_ACTIVATIONS",
    "OneDNNLinear",
    "activation",
    "amx_bf16",
    "autotune_enabled",
    "bf16_attention",
    "describe_paths",
    "drop_inference_cache",
    "dropout_attention",
    "embedding_lookup",
    "fusable",
    "onednn_bf16",
    "on_new_tune_choice",
    "onednn_trainable",
    "packed_weights",
    "prefer_amx_paths",
    "restore_tune_choices",
    "run_language_modules",
    "scored_cross_entropy",
    "tune_choices",
    "use_autocast_linear",
    "use_fused_cross_entropy",
    "use_one_pass_dropout",
    "use_table_gelu",
    "use_amx_kernels",
    "use_bf16_twin",
    "use_fused_residual_norm",
    "use_fused_vocab_loss",
    "use_native_training_attention",
    "use_native_training_modules",
    "use_native_vocab_projection",
    "use_native_weight_grad",
    "use_autotune",
    "use_onednn",
    "use_tied_row_gradient",
]
