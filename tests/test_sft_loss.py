"""The CPU SFT loss (chatpgt.training.sft_loss) trains on what TRL's fused loss trains on.

Both trainers see the same batches of a tiny real-tokenizer llama; their loss, entropy and
token accuracy must agree, and prompt tokens must not count. No worker, no database.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from chatpgt.training import throughput
from chatpgt.training.sft_loss import CrossEntropySFTTrainer, completion_metrics
from tests.fixtures_training import tiny_model_dir  # noqa: F401 - fixture

ESSAY = "Startups grow when founders talk to users. "
ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Write an essay titled 'Essay {i}'."}],
        "completion": [{"role": "assistant", "content": ESSAY * (i + 2)}],
    }
    for i in range(4)
]


def _trainer(cls: Any, model_dir: Path, out: Path) -> Any:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        max_length=128,
        completion_only_loss=True,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    return cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )


def test_plain_loss_equals_trls_fused_loss(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from trl import SFTTrainer

    fused = _trainer(SFTTrainer, tiny_model_dir, tmp_path / "fused")
    plain = _trainer(CrossEntropySFTTrainer, tiny_model_dir, tmp_path / "plain")
    batch = fused.data_collator([fused.train_dataset[i] for i in range(2)])
    # prompt tokens are masked: the loss is on the essay only
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
    fused.model.train()
    plain.model.train()
    loss_fused = fused.compute_loss(fused.model, dict(batch))
    loss_plain = plain.compute_loss(plain.model, dict(batch))
    assert loss_plain.item() == pytest.approx(loss_fused.item(), rel=1e-4)
    # gradients flow the same way
    loss_fused.backward()
    loss_plain.backward()
    g_fused = fused.model.model.embed_tokens.weight.grad
    g_plain = plain.model.model.embed_tokens.weight.grad
    assert torch.allclose(g_fused, g_plain, atol=1e-5, rtol=1e-3)
    # the metrics TRL logs, from the logits the plain loss already has
    for name in ("entropy", "mean_token_accuracy"):
        assert plain._metrics["train"][name][-1] == pytest.approx(
            fused._metrics["train"][name][-1], rel=1e-3, abs=1e-5
        )
    assert plain._metrics["train"]["num_tokens"] == fused._metrics["train"]["num_tokens"]
    # and the held-out pass reports the same loss
    assert plain.evaluate()["eval_loss"] == pytest.approx(fused.evaluate()["eval_loss"], rel=1e-4)


def test_completion_metrics_by_hand() -> None:
    # vocabulary of 3; position t predicts label t+1; -100 positions are not scored
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[-100, -100, 0, 1]])
    scored, entropy, hits = completion_metrics(logits, labels)
    assert scored == 2  # positions 1 and 2 predict labels 0 and 1
    uniform = math.log(3)
    peaked = torch.tensor([0.0, 5.0, 0.0]).log_softmax(-1)
    assert entropy == pytest.approx(uniform + float(-(peaked.exp() * peaked).sum()), rel=1e-5)
    assert hits == 2  # argmax of a uniform row is index 0 (= label 0); the peaked row says 1
    assert completion_metrics(logits, torch.full((1, 4), -100)) == (0, 0.0, 0)


def test_cpu_uses_the_plain_loss_and_cuda_the_fused_one() -> None:
    shape = throughput.ModelShape(params=135_000_000, layers=30, hidden=576, vocab=49_152)
    common: dict[str, Any] = {"kind": "sft", "shape": shape, "tokens_per_device": 1024}
    cpu = throughput.choose(cuda=False, bf16=False, device_memory_bytes=None, **common)
    gpu = throughput.choose(cuda=True, bf16=True, device_memory_bytes=80 * 2**30, **common)
    assert not cpu.fused_lm_head_loss and gpu.fused_lm_head_loss
