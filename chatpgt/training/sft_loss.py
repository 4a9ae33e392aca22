"""SFT on the model's own cross-entropy, for devices where TRL's fused lm-head loss is slow.

TRL 1.16's ``SFTTrainer.compute_loss`` always runs the model with ``fused_lm_head=True``: a
chunked kernel that yields per-token log-probabilities, entropy and top-1 hits without
materialising the logits. Off Triton devices it scores every position (prompt included) and
its backward recomputes the logits chunk by chunk: on CPU it costs more than half of an SFT
step (docs/training.md, ``sft`` vs ``sft-plain``). :class:`CrossEntropySFTTrainer` computes the
loss as ``Trainer`` does (the model's cross-entropy on the collator's labels, prompt tokens
masked with -100, normalised by ``num_items_in_batch``), then the same two metrics TRL logs,
``entropy`` and ``mean_token_accuracy``, from the logits it already has, on the completion
positions only, without gradients. The recipes pick it when
:attr:`chatpgt.training.throughput.Features.fused_lm_head_loss` is off.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer
from trl import SFTTrainer

# What the model's forward takes from TRL's collator batches (it also adds e.g. completion_mask).
MODEL_INPUTS = frozenset({"input_ids", "attention_mask", "labels", "position_ids"})
IGNORE_INDEX = -100


def completion_metrics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, float, int]:
    """(positions scored, summed entropy, top-1 hits) over the labelled next-token positions."""
    shifted = labels[..., 1:]
    mask = shifted != IGNORE_INDEX
    scored = logits[..., :-1, :][mask].float()
    if scored.numel() == 0:
        return 0, 0.0, 0
    logp = scored.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    hits = scored.argmax(-1) == shifted[mask]
    return int(mask.sum()), float(entropy.sum()), int(hits.sum())


class CrossEntropySFTTrainer(SFTTrainer):  # type: ignore[misc]
    """``SFTTrainer`` with ``Trainer``'s loss; the same metrics (see the module docstring)."""

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        mode = "train" if model.training else "eval"
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUTS}
        model_inputs["use_cache"] = False
        loss, outputs = Trainer.compute_loss(
            self, model, model_inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        with torch.no_grad():
            scored, entropy, hits = completion_metrics(outputs.logits, model_inputs["labels"])
        gather = self.accelerator.gather_for_metrics
        device = loss.device
        scored_all = float(gather(torch.tensor(scored, device=device)).sum())
        if scored_all > 0:
            entropy_all = float(gather(torch.tensor(entropy, device=device)).sum())
            hits_all = float(gather(torch.tensor(hits, device=device)).sum())
            self._metrics[mode]["entropy"].append(entropy_all / scored_all)
            self._metrics[mode]["mean_token_accuracy"].append(hits_all / scored_all)
        if mode == "train":
            if "attention_mask" in model_inputs:
                local = model_inputs["attention_mask"].sum()
            else:
                local = torch.tensor(model_inputs["input_ids"].size(1), device=device)
            self._total_train_tokens += int(gather(local).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
