"""The per-device choice of throughput features and the MFU arithmetic (no model is trained)."""

from __future__ import annotations

import pytest

from chatpgt.training import throughput
from chatpgt.training.throughput import ModelShape, choose

# SmolLM3-3B: 3.08B parameters, 36 layers, hidden 2048, vocab 128,256.
SMOLLM3 = ModelShape(params=3_075_000_000, layers=36, hidden=2048, vocab=128_256)
GB = 2**30


def features(**kwargs: object) -> throughput.Features:
    args: dict[str, object] = {
        "kind": "sft",
        "cuda": True,
        "bf16": True,
        "shape": SMOLLM3,
        "tokens_per_device": 2 * 2048,
        "device_memory_bytes": 80 * GB,
    }
    args.update(kwargs)
    return choose(**args)  # type: ignore[arg-type]


def test_checkpointing_only_where_memory_needs_it() -> None:
    # 3B full fine-tuning, 2 x 2048 tokens: ~41 GB fits an 80 GB GPU, not a 24 GB one.
    roomy = features()
    assert not roomy.activation_checkpointing
    assert roomy.estimated_memory_gb is not None and 30 < roomy.estimated_memory_gb < 64
    assert features(device_memory_bytes=24 * GB).activation_checkpointing
    # Longer sequences on the same GPU need it; FSDP over 8 GPUs shards the states and does not.
    assert features(tokens_per_device=8 * 8192).activation_checkpointing
    assert not features(device_memory_bytes=40 * GB, shards=8).activation_checkpointing
    # The request wins; the CPU never checkpoints by default and has no estimate.
    assert features(requested_checkpointing=True).activation_checkpointing
    cpu = features(cuda=False, bf16=False, device_memory_bytes=None)
    assert not cpu.activation_checkpointing and cpu.estimated_memory_gb is None


def test_optional_extras_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throughput, "installed", lambda module: True)
    gpu = features()
    assert gpu.attn_implementation == "flash_attention_2"
    assert gpu.padding_free and gpu.use_liger_kernel
    assert not features(kind="dpo").padding_free  # padding-free is an SFT collator feature
    cpu = features(cuda=False, bf16=False, device_memory_bytes=None)
    assert (cpu.attn_implementation, cpu.padding_free, cpu.use_liger_kernel) == (None, False, False)
    monkeypatch.setattr(throughput, "installed", lambda module: False)
    plain = features()
    assert (plain.attn_implementation, plain.padding_free, plain.use_liger_kernel) == (
        None,
        False,
        False,
    )


def test_mfu() -> None:
    # 6N + 12 L h s FLOPs per token; 10k tok/s of the 3B model at 2k tokens is ~20 % of an H100.
    per_token = throughput.flops_per_token(SMOLLM3, 2048)
    assert per_token == pytest.approx(6 * 3.075e9 + 12 * 36 * 2048 * 2048)
    peak = throughput.peak_flops_for("NVIDIA H100 80GB HBM3")
    assert peak == 989e12
    assert throughput.mfu(10_000, SMOLLM3, 2048, peak) == pytest.approx(0.205, abs=0.001)
    assert throughput.peak_flops_for("cpu") is None
