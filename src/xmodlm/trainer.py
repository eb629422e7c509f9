"""The one training loop for pre-training, language addition and fine-tuning: AMP, DDP/FSDP, atomic checkpoints, resume.

A recipe says what trains (`trainable`), on what data (`train_data`) and with which loss (the model's `out.loss`);
everything else lives here. This module knows nothing about the model, data or recipes.

Checkpoints (`out_dir/checkpoint/`, replaced atomically; `checkpoint.old` is the fallback after a crash mid-swap):
model.safetensors (+ config.json when the model has save_pretrained), optimizer.pt, one rank{r}.pt per process (RNG
and data-order state) and trainer_state.json. Every .pt file loads with `torch.load(weights_only=True)`.
Resuming from one restores all of it, so an interrupted run ends with the weights of an uninterrupted one. A resumed
run applies a changed max_steps, save_every, eval_every, log_every, tensorboard, device or strategy
(APPLIED_ON_RESUME) and refuses any other changed setting, naming the old and the new value (see Trainer).
A step whose loss or gradient norm is not finite stops the run before the update (TrainingDiverged), so the last
checkpoint is always the last good step. One run per out_dir: rank 0 holds out_dir/.xmodlm.lock (files.run_lock).

Each micro-batch loss is weighted by its share of the step's supervised targets (see `_n_targets`), so the update
equals one process on the whole global batch, whatever the accumulation and the number of processes.
Logs (rank 0): a tqdm bar and out_dir/metrics.jsonl, one JSON object per step logged.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .files import (atomic_write, atomic_write_text, fsync_file, recover_dir, run_lock, switch_dir, sync_tree,
                    write_error)
from .kernels import SLOW_BF16, autotune_enabled, onednn_bf16, restore_tune_choices, tune_choices, use_autotune
from .settings import check_ranges, setting
from .runtime import machine_info

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
STRATEGIES = ("ddp", "fsdp")
DEVICES = ("auto", "cpu", "cuda")


def _opt(default: Any, help: str, **bounds: Any) -> Any:
    """A TrainConfig field: its help, and its range as settings.setting takes it (low, above, high, below, length)."""
    return setting(default, help, **bounds)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping for one run; each field's metadata["help"] is its CLI help."""

    max_steps: int = _opt(1000, "optimizer updates to run in total (a resumed run counts the steps already done)",
                           low=1)
    lr: float = _opt(5e-4, "peak learning rate, reached after warmup, then decayed linearly to 0 at max_steps",
                     above=0)
    weight_decay: float = _opt(0.01, "AdamW decoupled weight decay; biases and LayerNorm weights (1-D) are exempt",
                               low=0)
    betas: tuple[float, float] = _opt((0.9, 0.98), "AdamW betas (RoBERTa/XLM-R values)", low=0, below=1, length=2)
    eps: float = _opt(1e-6, "AdamW epsilon (RoBERTa/XLM-R value)", above=0)
    warmup_steps: int = _opt(0, "linear warmup steps; when > 0 it replaces warmup_ratio", low=0,
                             conflicts="warmup_ratio")
    warmup_ratio: float = _opt(0.0, "warmup as a fraction of max_steps; used when warmup_steps is 0", low=0, high=1)
    grad_accum: int = _opt(1, "micro-batches per optimizer update (each is one item of train_data per process)",
                            low=1)
    max_grad_norm: float = _opt(1.0, "clip the global gradient norm to this; 0: no clipping (the norm is still logged)",
                                low=0)
    precision: str = _opt("auto", "fp32 | bf16 | auto: bf16 autocast on CUDA with bf16 support or on a CPU "
                                  "with AMX; fp32 otherwise")
    seed: int = _opt(0, "seed for dropout and any global RNG use; process r uses seed + r", low=0)
    log_every: int = _opt(10, "write averaged training metrics every this many steps", low=1)
    eval_every: int = _opt(0, "call evaluate() every this many steps (0: only at the end)", low=0)
    save_every: int = _opt(1000, "write a checkpoint every this many steps (0: only at the end)", low=0)
    out_dir: str = _opt("runs/xmodlm", "metrics.jsonl, checkpoint/ and tb/ go here; a checkpoint found here is resumed")
    device: str = _opt("auto", "auto | cpu | cuda (auto: cuda when available; under torchrun cuda:LOCAL_RANK)")
    strategy: str = _opt("ddp", "ddp | fsdp, under torchrun (ignored in one process). ddp: every process holds the "
                                "whole model and optimizer state. fsdp: FSDP2, per transformer layer then the root: "
                                "weights, gradients and AdamW state split across processes, for a model that does "
                                "not fit one device; same checkpoint files and the same losses as ddp")
    find_unused_parameters: bool = _opt(True, "DDP: X-Mod leaves the modules of languages absent from a batch unused")
    tensorboard: bool = _opt(True, "also write TensorBoard events to out_dir/tb when tensorboard is installed")
    autotune: bool = _opt(True, "time equivalent kernel formulations (on CPU the fp32 linears' weight gradient: "
                                "oneDNN or BLAS) on a shape's first call and keep the faster; a checkpoint keeps the "
                                "choices, so a resumed run continues bit for bit. Off: always the default ones, so "
                                "that two runs with the same seed give the same bits on the same machine (on, they "
                                "can differ in the last bits where the timing chose differently)")

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; expected one of {PRECISIONS}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}; expected one of {STRATEGIES}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device={self.device!r}; expected one of {DEVICES} or 'cuda:N'")
        self.betas = tuple(self.betas)  # YAML/JSON give lists
        check_ranges(self)  # every numeric field against its range (see _opt); a subclass's too

    @property
    def warmup(self) -> int:
        return self.warmup_steps or round(self.warmup_ratio * self.max_steps)  # warmup_steps > 0 wins


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) in a plain process."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _cpu_bf16_is_fast() -> bool:
    # AMX only. Measured on 2-core machines without AMX: on a Zen 4 (2026-11-25, before the own kernels; 20 steps of a
    # 4-layer width-256 X-Mod MLM on 16x128 tokens) bf16 autocast took 73 s, fp32 43 s; on a Zen 5 (2026-12-02, with
    # round 12's own AVX-512 kernels; docs/results/amx-perf/round12/precision-ab-2threads.txt) bf16 was 1.47x fp32's
    # speed at the demo's size and 2.15x at that one. Auto still means fp32 without AMX: switching it would change the
    # numerics users of those machines get by default on evidence from one processor; --precision bf16 takes the
    # speed. The probe is a private torch API, hence getattr: without it, auto means fp32.
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def emulated_bf16(device: torch.device, dtype: torch.dtype | None) -> bool:
    """bf16 autocast on a CPU without bf16 kernels, where torch emulates it: correct, but far slower than fp32."""
    return dtype is not None and device.type == "cpu" and not onednn_bf16()


def describe_precision(precision: str, device: torch.device, dtype: torch.dtype | None) -> str:
    """One line on what ``precision`` became on ``device`` and why (printed at start)."""
    name = "bf16 autocast" if dtype is not None else "fp32"
    if precision != "auto":
        return f"{name} (--precision {precision}{'; WARNING: ' + SLOW_BF16 if emulated_bf16(device, dtype) else ''})"
    if device.type == "cuda":
        why = "this GPU supports bf16" if dtype is not None else "this GPU lacks bf16"
    else:
        why = ("this CPU has AMX" if dtype is not None
               else "this CPU has no AMX (bf16 autocast can be faster without it too)" if onednn_bf16()
               else "this CPU has no bf16 kernels: torch would emulate bf16 products, far slower than fp32")
    return f"{name} (--precision auto: {why}; --precision fp32|bf16 to choose)"


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain fp32."""
    if precision == "fp32":
        return None
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else _cpu_bf16_is_fast()
    if precision == "auto":
        return torch.bfloat16 if supported else None
    if device.type == "cuda" and not supported:
        raise ValueError(f"precision='bf16' but {torch.cuda.get_device_name(device)} has no bf16; use 'fp32'")
    return torch.bfloat16  # on a CPU without bf16 kernels this is emulated: correct, but slow (describe_precision warns)


def _rng_state(device: torch.device) -> dict:
    # Plain values and tensors only, so checkpoints load with weights_only=True.
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), *rest))
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_plain(obj: Any, where: str) -> None:
    """Fail at save time, not at resume, when a state would need unpickling of arbitrary objects."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not (obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor)):
        # exact types: numpy scalars subclass float/int but pickle as numpy objects
        raise TypeError(f"{where} is a {type(obj).__name__}; checkpointed state may hold only tensors, numbers, "
                        "strings, None, lists and dicts (convert numpy arrays with .tolist() or torch.from_numpy)")


def _n_targets(batch: dict) -> torch.Tensor:
    """What the model's mean loss averages over: supervised labels (labels != -100), else examples. A micro-batch's
    loss is weighted by n_i / N of the step's global count, so the gradient and the logged loss are those of one
    process on the whole global batch."""
    if isinstance(batch.get("labels"), torch.Tensor):
        return (batch["labels"] != -100).sum()
    first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return torch.tensor(first.shape[0], device=first.device)


def _n_tokens(batch: dict) -> torch.Tensor:
    if isinstance(batch.get("attention_mask"), torch.Tensor):
        return batch["attention_mask"].sum()
    ids = batch.get("input_ids")
    return torch.tensor(ids.numel() if isinstance(ids, torch.Tensor) else 0)


def _alias(t: torch.Tensor) -> tuple:
    """Identifies tied/shared tensors: same storage, offset and layout."""
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()


def save_weights(model: torch.nn.Module, directory: Path) -> None:
    # safetensors' save_model keeps lm_head.decoder.weight and drops the tied word embeddings, which
    # from_pretrained (transformers and ours) reject; the model's own writer knows which name is canonical.
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
        return
    seen, state = set(), {}
    for name, t in model.state_dict().items():
        if _alias(t) not in seen:
            seen.add(_alias(t))
            state[name] = t.detach().contiguous()
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(state, tmp))


def _refuse_nonfinite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {bad[:4]}; a checkpoint "
                         "of a diverged run is not resumed")


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy every tensor of `path` into `model`; a model tensor absent from the file must be tied to one present."""
    tensors, own = load_file(path), model.state_dict()
    _refuse_nonfinite(tensors, path)
    unexpected = sorted(set(tensors) - set(own))
    if unexpected:
        raise ValueError(f"{path} holds tensors this model lacks: {unexpected[:8]}")
    loaded = set()
    with torch.no_grad():
        for name, t in tensors.items():
            if t.shape != own[name].shape:
                raise ValueError(f"{path}: {name} has shape {tuple(t.shape)}, the model {tuple(own[name].shape)}")
            own[name].copy_(t)
            loaded.add(_alias(own[name]))
    missing = [n for n, t in own.items() if n not in tensors and _alias(t) not in loaded]
    if missing:
        raise ValueError(f"{path} lacks tensors of this model: {missing[:8]}")


def _tied_names(model: torch.nn.Module) -> dict[str, str]:
    """State-dict name -> the first name of the same tensor, for every tied or shared name after the first."""
    first, tied = {}, {}
    for name, t in model.state_dict().items():
        if _alias(t) in first:
            tied[name] = first[_alias(t)]
        else:
            first[_alias(t)] = name
    return tied


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model's structure and config with meta tensors (no memory; ties kept): names gathered FSDP states."""
    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = torch.nn.Parameter(meta, t.requires_grad) if isinstance(t, torch.nn.Parameter) else meta
    return copy.deepcopy(model, memo)


STACK_NAMES = ("layer", "layers", "h", "blocks")  # ModuleLists of transformer layers, run in every forward


def fsdp_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that become FSDP units before the root: X-Mod's encoder layers, else the items of the ModuleLists
    named like a layer stack. Not every ModuleList: one of modules routed per batch (ToyMLM's languages, experts) is
    run by some processes only, and a unit's collectives must be issued by all."""
    for path in ("roberta.encoder.layer", "encoder.layer"):
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, torch.nn.ModuleList):
            return list(layers)
    return [m for name, stack in model.named_modules()
            if isinstance(stack, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in STACK_NAMES for m in stack]


# What a resumed run may change (see Trainer); every other setting must be the checkpoint's.
APPLIED_ON_RESUME = ("max_steps", "save_every", "eval_every", "log_every", "tensorboard", "out_dir", "device",
                     "strategy", "find_unused_parameters")


class TrainingDiverged(FloatingPointError, ValueError):
    """A step's loss or gradient norm was NaN or infinite; nothing of that step was applied or saved."""


def _checkpoint_step(path: Path) -> Any:
    try:
        return json.loads((path / "trainer_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint in out_dir: `checkpoint`, or `checkpoint.old` if a crash hit between the two renames."""
    for name in ("checkpoint", "checkpoint.old"):
        path = Path(out_dir) / name
        if (path / "trainer_state.json").is_file():
            return path
    return None


def bar_scores(scores: dict[str, float]) -> dict[str, str]:
    """Evaluation scores for the progress bar: all of a few ("eval/accuracy"), else only their means."""
    shown = {k.split("/", 1)[-1]: v for k, v in scores.items()}
    if len(shown) > 3:
        shown = {k: v for k, v in shown.items() if k.endswith("mean")} or dict(list(shown.items())[:3])
    return {k: f"{v:.4g}" for k, v in shown.items()}


class Trainer:
    """Trains `model` (called as `model(**batch).loss`) on batches from `train_data` for `config.max_steps` updates.

    trainable: name -> bool selects the parameters that train; the rest get requires_grad=False and stay out of the
        optimizer (language addition: only the new modules; fine-tuning: all but embeddings and language modules).
        None keeps the model's own requires_grad flags.
    no_decay: name -> bool selects trainable parameters that go in the optimizer group without weight decay, besides
        every 1-D one (language addition: the embedding matrix, of which only some rows train; weight decay would
        shrink the frozen rows too).
    evaluate: model -> {name: float}, run every eval_every steps and at the end on every process (it may shard its
        data with dist_info(); rank 0's numbers are logged, as "eval/<name>"; under fsdp every process must make the
        same number of forward calls, each all-gathers). It runs under no_grad with the global RNG
        forked, so adding evaluation never changes the training trajectory.
    train_data: an iterator (or a re-iterable, restarted as a new epoch when exhausted) of batch dicts; under torchrun
        each process must receive its own slice of the global batch. If it has state_dict()/load_state_dict(), its
        position is checkpointed per process and restored on resume. Resuming on another number of processes gives
        every process rank 0's data state (MLMBatches' state is rank-independent) and fresh RNG streams.
    fixed: the recipe's settings that shape the run beyond TrainConfig (batch size, sequence length, languages, model
        shape ...), as JSON-able name -> value; stored in the checkpoint and compared on resume.

    Changed settings on resume: APPLIED_ON_RESUME (max_steps, save_every, eval_every, log_every, tensorboard, out_dir,
    device, strategy, find_unused_parameters) take their new value; any other change of a TrainConfig field (lr,
    betas, eps, weight_decay, warmup, grad_accum, max_grad_norm, precision, seed) or of `fixed` is refused with a
    message naming the old and the new value, never warned about and ignored.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_data: Iterable[dict],
                 evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                 trainable: Callable[[str], bool] | None = None, no_decay: Callable[[str], bool] | None = None,
                 fixed: dict[str, Any] | None = None):
        self.config, self.train_data, self.evaluate = config, train_data, evaluate
        self.fixed = dict(fixed or {})
        if config.autotune != autotune_enabled():  # for the whole process, as every kernels switch
            use_autotune(config.autotune)
        self.rank, self.world_size, local_rank = dist_info()
        self.is_main = self.rank == 0
        self.out_dir = Path(config.out_dir)
        if config.device == "auto":
            kind = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            kind = config.device
        self.device = torch.device(f"cuda:{local_rank}" if kind == "cuda" and self.world_size > 1 else kind)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._owns_process_group = self.world_size > 1 and not dist.is_initialized()
        if self._owns_process_group:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.amp_dtype = resolve_precision(config.precision, self.device)  # resolved once, recorded in checkpoints
        self.precision = "bf16" if self.amp_dtype is not None else "fp32"
        if self.is_main:
            (logger.warning if emulated_bf16(self.device, self.amp_dtype) else logger.info)(
                "precision: %s", describe_precision(config.precision, self.device, self.amp_dtype))
        seed_everything(config.seed + self.rank)

        self.model = model.to(self.device)
        if trainable is not None:
            for name, p in self.model.named_parameters():
                p.requires_grad_(bool(trainable(name)))
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"no trainable parameters among the model's {len(list(model.parameters()))}; "
                             "check the `trainable` predicate against model.named_parameters() names")
        self.trainable_names = [n for n, _ in named]
        if self.is_main:
            n_train, n_all = sum(p.numel() for _, p in named), sum(p.numel() for p in self.model.parameters())
            logger.info("%s of %s parameters train (%d tensors)", f"{n_train:,}", f"{n_all:,}", len(named))
        self.fsdp = config.strategy == "fsdp" and self.world_size > 1
        self._used = None  # fsdp: which trainable parameters' modules ran in this step, on this process
        if self.fsdp:
            self._shard([p for _, p in named])
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            assert [n for n, _ in named] == self.trainable_names, "fully_shard renamed parameters"
        self.params = [p for _, p in named]
        exempt = {id(p) for n, p in named if p.ndim < 2 or (no_decay is not None and no_decay(n))}
        groups = [{"params": [p for p in self.params if id(p) not in exempt]},
                  {"params": [p for p in self.params if id(p) in exempt], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                           weight_decay=config.weight_decay, fused=True)
        warmup, total = config.warmup, config.max_steps

        def schedule(step: int) -> float:  # LambdaLR multiplier for the update after `step` updates
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.step, self.epoch, self._elapsed_before = 0, 0, 0.0
        self._iterator = None
        if self.is_main:  # one run per out_dir (files.run_lock), released when fit ends or by close()
            self._lock = contextlib.ExitStack()
            self._lock.enter_context(run_lock(self.out_dir, "training run"))
        try:
            if self.is_main:
                recover_dir(self.out_dir / "checkpoint", self.out_dir / "checkpoint.old")
            self._barrier()
            checkpoint = find_checkpoint(self.out_dir)
            if checkpoint is not None:
                self._load(checkpoint)  # before DDP wraps: every process loads the same weights
        except BaseException:
            self.close()
            raise
        self.ddp = None
        if self.world_size > 1 and not self.fsdp:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters)

    def close(self) -> None:
        """Release out_dir's run lock (fit does, when it ends); idempotent."""
        lock = self.__dict__.pop("_lock", None)
        if lock is not None:
            lock.close()

    def __del__(self):
        self.close()

    # ---- fsdp ----------------------------------------------------------------------------------------------------
    def _shard(self, trainable: list[torch.nn.Parameter]) -> None:
        """FSDP2 (`fully_shard`), for a model that does not fit one device with its gradients and optimizer state:
        each transformer layer is one unit (`fsdp_units`), the root holds the rest (embeddings, tied LM head).
        Checkpoints stay the same files: rank 0 writes full state dicts gathered from every process, so either
        strategy, or one process, resumes the other's. Language modules must live inside units that every process
        runs (a unit run by some processes only would issue mismatched collectives)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self._tied = _tied_names(self.model)
        self._skeleton = _meta_copy(self.model)  # before the hooks below and before sharding
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        units = fsdp_units(self.model)
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(self.model, mesh=mesh)
        # DDP leaves a parameter that no process used without a gradient, so AdamW skips it; FSDP gives it zeros.
        # Autograd tells which parameters a step used: a unit's forward runs with its whole (unsharded) parameters
        # in place, and a hook on each of those marks it used when its gradient arrives. _train_step sets the
        # gradients of the parameters no process used back to None.
        self._used = torch.zeros(len(trainable), dtype=torch.bool)
        index = {n: i for i, n in enumerate(self.trainable_names)}
        hooked: dict[int, torch.Tensor] = {}  # FSDP keeps one unsharded Parameter per parameter for good
        prefixes = {id(m): name + "." if name else "" for name, m in self.model.named_modules()}

        def mark_used(unit: torch.nn.Module, args: Any) -> None:
            from torch.distributed.tensor import DTensor

            if not torch.is_grad_enabled():
                return
            for name, p in unit.named_parameters():  # the unit's own are whole now, its sub-units' still sharded
                i = index.get(prefixes[id(unit)] + name)
                if i is not None and id(p) not in hooked and not isinstance(p, DTensor):
                    hooked[id(p)] = p
                    p.register_post_accumulate_grad_hook(lambda _, i=i: self._used.__setitem__(i, True))

        for unit in [*units, self.model]:
            unit.register_forward_pre_hook(mark_used)  # after FSDP's own, which all-gathers the unit
        # X-Mod: a language absent from one process's batch leaves its modules without a gradient there; every
        # process must still reduce-scatter the same tensors (zeros for those).
        self.model.set_reduce_scatter_unused_params(True)

    def _full_states(self) -> tuple[dict | None, dict | None]:
        """(weights, optimizer state) as full, CPU state dicts on rank 0 (None elsewhere); every process calls it."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(self.model, options=options)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        if not self.is_main:
            return None, None
        for name, first in self._tied.items():  # gathered separately: tie them again
            weights[name] = weights[first]
        names = self._optimizer_names()  # plain AdamW's integer ids, as the ddp and one-process checkpoints
        ids = {n: i for i, n in enumerate(names)}
        optim = {"state": {ids[n]: v for n, v in optim["state"].items()},
                 "param_groups": [{**g, "params": [ids[n] for n in g["params"]]} for g in optim["param_groups"]]}
        return weights, optim

    def _optimizer_names(self) -> list[str]:
        """Parameter names in the order of the optimizer's integer ids."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]

    def _write_weights(self, weights: dict, directory: Path) -> None:
        plain = copy.deepcopy(self._skeleton)  # meta tensors: no memory
        plain.load_state_dict(weights, assign=True)
        save_weights(plain, directory)

    def save_model(self, directory: str | Path) -> None:
        """Write the current weights to `directory` as in a checkpoint (save_pretrained when the model has it).
        Under fsdp, where `self.model` is sharded, every process must call it; rank 0 writes."""
        directory = Path(directory)
        weights = self._full_states()[0] if self.fsdp else None
        if self.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            self._write_weights(weights, directory) if self.fsdp else save_weights(self.model, directory)
        self._barrier()

    def _load_full_states(self, path: Path, optim: dict) -> None:
        """Every process reads the full files and keeps its shards."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        tensors, own = load_file(path / "model.safetensors"), self._skeleton.state_dict()
        _refuse_nonfinite(tensors, path / "model.safetensors")
        for name, first in self._tied.items():  # a file holds one name of tied tensors, not always the first
            if first not in tensors and name in tensors:
                tensors[first] = tensors[name]
            if first in tensors:
                tensors[name] = tensors[first]
        unexpected, missing = sorted(set(tensors) - set(own)), sorted(set(own) - set(tensors))
        if unexpected or missing:
            raise ValueError(f"{path / 'model.safetensors'} does not fit this model: tensors it lacks "
                             f"{unexpected[:8]}, tensors the model lacks {missing[:8]}")
        for name, t in tensors.items():
            if t.shape != own[name].shape:
                raise ValueError(f"{path}: {name} has shape {tuple(t.shape)}, the model {tuple(own[name].shape)}")
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, tensors, options=options)
        names = self._optimizer_names()
        optim = {"state": {names[i]: v for i, v in optim["state"].items()},
                 "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in optim["param_groups"]]}
        # strict=False: a parameter that never had a gradient (a language no batch held yet) has no state, here as
        # in the file; the dummy state set_optimizer_state_dict creates to initialise the optimizer goes again.
        set_optimizer_state_dict(self.model, self.optimizer, optim,
                                 options=StateDictOptions(full_state_dict=True, strict=False))
        for p, name in zip([p for g in self.optimizer.param_groups for p in g["params"]], names):
            if name not in optim["state"]:
                self.optimizer.state.pop(p, None)

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def _data_state(self) -> Any:
        state = self.train_data.state_dict() if hasattr(self.train_data, "state_dict") else None
        _check_plain(state, "train_data.state_dict()")
        return state

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def save(self) -> None:
        """Write out_dir/checkpoint atomically: a kill at any moment leaves one complete checkpoint on disk."""
        final, old, tmp = (self.out_dir / n for n in ("checkpoint", "checkpoint.old", ".checkpoint.tmp"))
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # debris of a run killed while saving
            tmp.mkdir(parents=True)
        self._barrier()
        # Each process has its own dropout stream and data slice, so each writes its own file.
        rank_file = current = tmp / f"rank{self.rank}.pt"
        try:
            # the kernels' timed choices too (each process made its own): a resumed run takes them back
            torch.save({"rng": _rng_state(self.device), "data": self._data_state(), "kernels": tune_choices()},
                       rank_file)
            fsync_file(rank_file)
            weights, optim = self._full_states() if self.fsdp else (None, None)  # collectives: every rank
            if self.is_main:
                current = tmp / "model.safetensors"
                if self.fsdp:
                    self._write_weights(weights, tmp)
                else:
                    weights, optim = None, self.optimizer.state_dict()
                    save_weights(self.model, tmp)
                current = tmp / "optimizer.pt"
                torch.save({"optimizer": optim, "scheduler": self.scheduler.state_dict()}, current)
                del weights, optim
                state = {"step": self.step, "epoch": self.epoch, "elapsed": self._elapsed(),
                         "world_size": self.world_size, "trainable": self.trainable_names,
                         "config": dataclasses.asdict(self.config), "fixed": self.fixed,
                         "precision": self.precision, "machine": {**machine_info(), "device": str(self.device)}}
                current = tmp / "trainer_state.json"
                current.write_text(json.dumps(state, indent=2))
                # Written in place, not each atomically: the directory is what replaces the old checkpoint.
                current = tmp
                sync_tree(tmp)
        except (OSError, RuntimeError) as e:  # a full disk: name the file; the last checkpoint stays as it was
            shutil.rmtree(tmp, ignore_errors=True)
            error = write_error(getattr(e, "filename", None) or current, e)
            kept = f"{final} (step {_checkpoint_step(final)}) is kept" if final.is_dir() else "no checkpoint was kept"
            raise OSError(error.errno, f"{error.strerror} (checkpoint of step {self.step}; {kept})",
                          error.filename) from e
        self._barrier()  # every rank file is on disk before the swap
        if self.is_main:
            # Two renames (files.switch_dir); between them only checkpoint.old exists, and find_checkpoint falls
            # back to it (recover_dir renames it back at the next start).
            switch_dir(tmp, final, old)
        self._barrier()

    def _read(self, file: Path, what: str, **load: Any) -> Any:
        """One file of a checkpoint; any failure is a ValueError naming it (never a hint to unpickle objects)."""
        try:
            if file.suffix == ".json":
                state = json.loads(file.read_text(encoding="utf-8"))
                if not isinstance(state, dict) or not {"step", "epoch", "elapsed", "world_size", "trainable",
                                                       "config"} <= set(state):
                    raise ValueError("not a trainer state")
                return state
            return torch.load(file, weights_only=True, **load)
        except Exception as e:
            reason = "missing" if isinstance(e, FileNotFoundError) else f"unreadable or corrupt ({type(e).__name__})"
            raise ValueError(f"{file}: the checkpoint's {what} is {reason}; it holds only tensors and plain values "
                             f"when written by xmodlm. Move {file.parent} away to start over from step 0, or restore "
                             "it from a backup") from None

    def _load(self, path: Path) -> None:
        state = self._read(path / "trainer_state.json", "trainer state")
        same_world = state["world_size"] == self.world_size
        if not same_world:
            logger.warning("%s was written by %d processes, this run has %d: every process takes rank 0's data "
                           "position (right for MLMBatches, whose state does not depend on the rank) and keeps its "
                           "fresh seed; training continues, but not bit-identically", path, state["world_size"],
                           self.world_size)
        if state["trainable"] != self.trainable_names:
            before, now = set(state["trainable"]), set(self.trainable_names)
            gone, new = sorted(before - now), sorted(now - before)
            change = "; ".join(part for part in (
                f"{len(new)} train now that did not there (e.g. {', '.join(new[:3])})" if new else "",
                f"{len(gone)} trained there that do not now (e.g. {', '.join(gone[:3])})" if gone else "",
            ) if part) or "the same parameters in another order"
            raise ValueError(f"{self.out_dir} holds a run that trained other parameters ({change}): the model or "
                             "what trains changed since. Use a new --out for this run, or the earlier settings to "
                             "resume that one")
        now = json.loads(json.dumps(dataclasses.asdict(self.config)))  # tuples -> lists, as in the file
        changed = {k: (v, now[k]) for k, v in state["config"].items() if k in now and now[k] != v}
        fixed = json.loads(json.dumps(self.fixed))
        changed.update({k: (v, fixed[k]) for k, v in state.get("fixed", {}).items() if k in fixed and fixed[k] != v})
        refused = {k: v for k, v in changed.items() if k not in APPLIED_ON_RESUME}
        if refused:
            listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in refused.items())
            raise ValueError(f"{path} was trained with other settings ({listed}). A resumed run keeps the settings it "
                             f"started with, except {', '.join(APPLIED_ON_RESUME)}: rerun with the checkpoint's values "
                             "to resume, or pass a new out_dir to start a new run with these")
        if changed:
            logger.info("resuming with changed settings, applied (checkpoint, now): %s", changed)
        if self.fsdp:
            optim = self._read(path / "optimizer.pt", "optimizer state", map_location="cpu")
            self._load_full_states(path, optim["optimizer"])
        else:
            try:
                load_weights(self.model, path / "model.safetensors")
            except ValueError:
                raise
            except Exception as e:  # safetensors' own error on a truncated file
                raise ValueError(f"{path / 'model.safetensors'}: the checkpoint's weights are unreadable or corrupt "
                                 f"({type(e).__name__}: {e}); move {path} away to start over") from None
            optim = self._read(path / "optimizer.pt", "optimizer state", map_location=self.device)
            self.optimizer.load_state_dict(optim["optimizer"])
        self.scheduler.load_state_dict(optim["scheduler"])
        rank_file = path / f"rank{self.rank if same_world else 0}.pt"
        mine = self._read(rank_file, "RNG and data state", map_location="cpu")
        if mine["data"] is not None:
            if not hasattr(self.train_data, "load_state_dict"):
                raise ValueError(f"{path} holds a data position but train_data "
                                 f"({type(self.train_data).__name__}) has no load_state_dict()")
            self.train_data.load_state_dict(mine["data"])
        if mine.get("kernels"):  # the formulations the interrupted run timed and chose (none in older checkpoints)
            try:
                restore_tune_choices(mine["kernels"])
            except ValueError as e:
                raise ValueError(f"{rank_file}: the checkpoint's kernel choices are unreadable or corrupt ({e}); "
                                 f"move {path} away to start over") from None
        if same_world:
            _set_rng_state(mine["rng"], self.device)  # last: nothing after it may consume random numbers
        self.step, self.epoch, self._elapsed_before = state["step"], state["epoch"], state["elapsed"]
        logger.info("resuming from step %d (%s)", self.step, path)

    # ---- training ----------------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        started = getattr(self, "_started", None)
        return self._elapsed_before + (time.perf_counter() - started if started is not None else 0.0)

    def _next_batch(self) -> dict:
        if self._iterator is None:
            self._iterator = iter(self.train_data)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self._iterator = iter(self.train_data)  # a re-iterable starts a new epoch; an iterator stays empty
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise RuntimeError(f"train_data ran out at step {self.step} of max_steps={self.config.max_steps}; "
                                   "pass an endless iterator or a re-iterable such as a DataLoader") from None
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(t)
        return t

    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer update; returns (this process's share of the step loss, its tokens, grad norm)."""
        model = self.ddp or self.model
        micro = [self._next_batch() for _ in range(self.config.grad_accum)]
        if self._used is not None:
            self._used.zero_()
        counts = torch.stack([_n_targets(b) for b in micro]).float()
        total = self._all_reduce(counts.sum()).clamp(min=1)  # a step without targets: zero loss, not 0/0
        # DDP and FSDP average gradients over processes, so scale by world_size to get sum_i n_i * grad(loss_i) / N.
        weights = counts * self.world_size / total
        loss_share = torch.zeros((), device=self.device)
        tokens = torch.zeros((), device=self.device)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                    else contextlib.nullcontext())
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            # fsdp reduce-scatters every micro-batch's gradients (its no_sync would keep them whole)
            with (model.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()):
                with autocast:
                    loss = model(**batch).loss.float()
                (loss * weights[i]).backward()
            loss_share += loss.detach() * counts[i] / total
            tokens += _n_tokens(batch)
        if self._used is not None:  # fsdp: parameters no process used get no update, as under ddp
            used = self._all_reduce(self._used.to(self.device, torch.int32))
            for p, u in zip(self.params, used.tolist()):
                if not u:
                    p.grad = None
        norm = self._clip_gradients()
        self._check_finite(loss_share, norm)  # before the update: a diverged step never reaches the weights
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)  # None, not 0: AdamW skips modules a step did not use
        return loss_share, tokens, norm

    def _clip_gradients(self) -> torch.Tensor:
        """The global gradient norm (whole, also under fsdp), after scaling the gradients down to max_grad_norm where
        it is above: torch's clip_grad_norm_ (its norm, then its coefficient max_norm / (norm + 1e-6)), but the
        multiplication, a pass over every gradient, runs only where that coefficient is below 1. torch multiplies by
        the coefficient clamped to 1 at every step, to spare a GPU a synchronisation; the step synchronises for
        _check_finite anyway, and multiplying by 1 changes no value. max_grad_norm 0 never multiplies."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        whole = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # fsdp: a DTensor
        limit = self.config.max_grad_norm
        if limit and bool(limit / (whole + 1e-6) < 1):
            torch.nn.utils.clip_grads_with_norm_(self.params, limit, norm)
        return whole

    def _check_finite(self, loss_share: torch.Tensor, norm: torch.Tensor) -> None:
        """Stop before step self.step + 1 updates anything when its loss or gradient norm is not finite (on any
        process): the weights and the last checkpoint stay those of the last good step."""
        bad = self._all_reduce((~torch.isfinite(torch.stack([loss_share.float(), norm.float()]))).float())
        if bad.any():
            names = [n for n, b in zip(("the loss", "the gradient norm"), bad.tolist()) if b]
            what = " and ".join(names) + (" are" if len(names) > 1 else " is")
            last = find_checkpoint(self.out_dir)
            kept = (f"the last checkpoint ({last}, step {_checkpoint_step(last)}) is kept" if last is not None
                    else "no checkpoint was written")
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(
                f"{what} not finite at step {self.step + 1} (loss {float(loss_share):g}, gradient norm "
                f"{float(norm):g}); the step was not applied and {kept}. Start again with a lower lr (now "
                f"{self.scheduler.get_last_lr()[0]:g}) or precision='fp32', in a new out_dir")

    def _run_evaluate(self) -> dict[str, float]:
        rng = _rng_state(self.device)
        try:
            with torch.no_grad():
                results = self.evaluate(self.model)
        finally:
            _set_rng_state(rng, self.device)
            self.model.train()
        return {f"eval/{k}": float(v) for k, v in results.items()}

    def _open_logs(self):
        """Open metrics.jsonl for appending after dropping lines past the resumed step (a killed run's tail)."""
        path = self.out_dir / "metrics.jsonl"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.step:
                        kept.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut short by a kill
            atomic_write_text(path, "".join(kept))
        tb = None
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step + 1)
            except ImportError:
                pass
        return open(path, "a"), tb

    def fit(self, export_dir: str | Path | None = None) -> dict[str, float]:
        """Train up to max_steps (resuming where the checkpoint left off); returns the last metrics record. Releases
        out_dir's run lock when it returns or fails."""
        try:
            return self._fit(export_dir)
        finally:
            self.close()

    def _fit(self, export_dir: str | Path | None) -> dict[str, float]:
        cfg = self.config
        metrics_file, tb = self._open_logs() if self.is_main else (None, None)
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not self.is_main, desc="train", dynamic_ncols=True)
        (self.ddp or self.model).train()
        self._started = time.perf_counter()
        window = torch.zeros(3, device=self.device)  # loss share sum, tokens, grad norm sum
        window_steps, window_start = 0, time.perf_counter()
        record: dict[str, float] = {"step": self.step}
        postfix: dict[str, str] = {}  # the progress bar's last loss, throughput and evaluation scores
        try:
            while self.step < cfg.max_steps:
                lr = self.scheduler.get_last_lr()[0]
                loss_share, tokens, norm = self._train_step()
                # every process holds the same global norm: the sum over processes is world_size norms
                window += torch.stack([loss_share, tokens.float(), norm.float() / self.world_size])
                window_steps += 1
                self.step += 1
                bar.update(1)
                done = self.step == cfg.max_steps
                record = {"step": self.step}
                if self.step % cfg.log_every == 0 or done:
                    loss_sum, tok, norm_sum = self._all_reduce(window.clone()).tolist()
                    seconds = time.perf_counter() - window_start
                    loss = loss_sum / window_steps
                    record.update(loss=loss, lr=lr, tokens_per_s=tok / seconds, grad_norm=norm_sum / window_steps,
                                  elapsed=self._elapsed())
                    postfix.update(loss=f"{loss:.4f}", tok_s=f"{tok / seconds:,.0f}")
                    bar.set_postfix(postfix)
                    window.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                paused = time.perf_counter()  # evaluation and saving do not count against throughput
                if self.evaluate is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or done):
                    scores = self._run_evaluate()
                    record.update(scores)
                    postfix.update(bar_scores(scores))
                    bar.set_postfix(postfix)
                if len(record) > 1 and self.is_main:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    if tb is not None:
                        for k, v in record.items():
                            if k != "step":
                                tb.add_scalar(k if k.startswith("eval/") else f"train/{k}", v, self.step)
                if (cfg.save_every and self.step % cfg.save_every == 0) or done:
                    self.save()
                window_start += time.perf_counter() - paused
            if len(record) == 1 and self.evaluate is not None:  # resumed a finished run: still report its quality
                record.update(self._run_evaluate())
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
            if tb is not None:
                tb.close()
            self._elapsed_before, self._started = self._elapsed(), None
        if export_dir is not None:  # while the process group lives: under fsdp the weights are gathered
            self.save_model(export_dir)
        if self._owns_process_group:
            dist.barrier()  # no rank tears gloo down while another still has collectives in flight
            dist.destroy_process_group()
        return record
