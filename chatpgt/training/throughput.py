"""Throughput features per device, chosen from what TRL and transformers already offer.

Torch-free (plain arithmetic and ``importlib`` look-ups), so the benchmark and the recipes share
one decision:

- **Flash attention** (``attn_implementation="flash_attention_2"``) on a CUDA GPU with bf16
  when the ``flash-attn`` package is installed; it is what makes padding-free batches correct.
- **Padding-free SFT batches** (``SFTConfig(padding_free=True)``): the examples of a batch are
  concatenated with their own position ids instead of padded to the longest, so no FLOP goes to
  padding. Only with flash attention: the default SDPA kernel would attend across examples.
- **Liger kernels** (``use_liger_kernel=True``: fused RMSNorm, RoPE, SwiGLU and a chunked
  cross-entropy that never materialises the full logits) on CUDA when ``liger-kernel`` is
  installed.
- **The SFT loss**: TRL 1.16's ``SFTTrainer`` computes its loss (and its entropy and accuracy
  metrics) through a fused, chunked lm-head kernel that never materialises the full logits. On
  a GPU that saves memory; on CPU it scores every position and its backward recomputes the
  logits chunk by chunk, which measured 2.2x slower than the model's own cross-entropy on
  SmolLM2-135M (docs/training.md). ``fused_lm_head_loss`` keeps it on CUDA only; elsewhere
  :class:`chatpgt.training.sft_loss.CrossEntropySFTTrainer` trains on the plain loss.
- **Activation checkpointing only where memory needs it**: on a GPU, when the estimate of
  weights, gradients, optimizer state and activations (:func:`training_memory_bytes`) exceeds
  ``MEMORY_HEADROOM`` of the device; never on CPU. A request's ``gradient_checkpointing`` wins.

None of these is required: on CPU, or on a GPU without the optional extras, the run uses SDPA
and padded batches, as the seed did.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass

# Use at most this share of the device's memory for the estimate before checkpointing.
MEMORY_HEADROOM = 0.8
# Peak dense bf16 tensor FLOP/s of common training GPUs (vendor figures, no sparsity), for MFU.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True, slots=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    vocab: int


@dataclass(frozen=True, slots=True)
class Features:
    attn_implementation: str | None
    padding_free: bool
    use_liger_kernel: bool
    activation_checkpointing: bool
    estimated_memory_gb: float | None
    fused_lm_head_loss: bool = True

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def training_memory_bytes(
    shape: ModelShape,
    *,
    tokens_per_device: int,
    bf16: bool,
    shards: int = 1,
    lora: bool = False,
    flash: bool = False,
) -> float:
    """A first-order estimate of one device's training memory without checkpointing.

    Weights in the training dtype; gradients and AdamW's two moments (kept in the parameters'
    dtype) for trainable parameters (all, or ~1 % under LoRA), divided by ``shards`` under
    FSDP; activations per token and layer
    ~34 x hidden bytes in bf16 (Korthikanti et al. 2022; doubled in fp32; attention scores are
    not stored with flash attention and are left out either way), plus the logits in fp32.
    """
    width = 2 if bf16 else 4
    trainable = shape.params * (0.01 if lora else 1.0)
    states = shape.params * width + trainable * width * 3
    activations = tokens_per_device * shape.layers * shape.hidden * 34 * (width / 2)
    logits = tokens_per_device * shape.vocab * 4 * (1 if flash else 2)
    return states / shards + activations + logits


def choose(
    *,
    kind: str,
    cuda: bool,
    bf16: bool,
    shape: ModelShape,
    tokens_per_device: int,
    device_memory_bytes: int | None,
    shards: int = 1,
    lora: bool = False,
    requested_checkpointing: bool | None = None,
) -> Features:
    """The features a run on this device uses (see the module docstring)."""
    flash = cuda and bf16 and installed("flash_attn")
    estimate = None
    checkpointing = False
    if cuda:
        estimate = training_memory_bytes(
            shape,
            tokens_per_device=tokens_per_device,
            bf16=bf16,
            shards=shards,
            lora=lora,
            flash=flash,
        )
        if device_memory_bytes:
            checkpointing = estimate > MEMORY_HEADROOM * device_memory_bytes
        else:
            checkpointing = True
    if requested_checkpointing is not None:
        checkpointing = requested_checkpointing
    return Features(
        attn_implementation="flash_attention_2" if flash else None,
        padding_free=flash and kind == "sft",
        use_liger_kernel=cuda and installed("liger_kernel"),
        activation_checkpointing=checkpointing,
        estimated_memory_gb=round(estimate / 2**30, 2) if estimate is not None else None,
        fused_lm_head_loss=cuda,
    )


def flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward and backward) plus attention's
    12 x layers x hidden x sequence length (PaLM appendix B); no recomputation counted."""
    return 6 * shape.params + 12 * shape.layers * shape.hidden * seq_len


def mfu(tokens_per_s: float, shape: ModelShape, seq_len: int, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak."""
    return tokens_per_s * flops_per_token(shape, seq_len) / peak_flops


def peak_flops_for(device_name: str) -> float | None:
    """Peak bf16 FLOP/s of a known GPU, from its name; None when unknown."""
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return value
    return None
