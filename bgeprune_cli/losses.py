"""Distillation losses for embedding models (DESIGN.md §4): what the student must keep of the teacher.

Embedding models are judged by the geometry of their outputs, so besides matching each vector
(cosine, only when the output dims match) the student matches the teacher's in-batch similarity
distribution (KL), which survives hidden pruning. Optional: layer-wise MSE through a learned map
(CoFi), and a contrastive loss on labelled query/positive/negative pairs.

Example:
    bgeprune train recipes/minilm-50pct.toml --set distill.layerwise=1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean 1 − cos between matching rows."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def _off_diagonal_logits(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row i: similarities of text i to every other text of the batch (its trivial self-match removed)."""
    normed = F.normalize(embeddings.float(), dim=-1)
    sims = normed @ normed.T / temperature
    n = sims.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=sims.device)
    return sims.masked_select(keep).view(n, n - 1)


def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) between in-batch similarity distributions; needs no matching dims."""
    log_p_teacher = F.log_softmax(_off_diagonal_logits(teacher, temperature), dim=-1)
    log_p_student = F.log_softmax(_off_diagonal_logits(student, temperature), dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


def contrastive_loss(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None,
                     temperature: float) -> torch.Tensor:
    """InfoNCE: each query against its positive, the other positives and every hard negative."""
    q = F.normalize(queries.float(), dim=-1)
    docs = positives if negatives is None or negatives.numel() == 0 else torch.cat([positives, negatives])
    logits = q @ F.normalize(docs.float(), dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


class LayerMaps(nn.Module):
    """CoFi-style layer distillation: a learned linear map (identity at start) from student states to
    teacher states; each chosen teacher layer is matched to the closest student layer at or after
    the previous match, so dropped student layers are skipped instead of being forced to imitate."""

    def __init__(self, hidden: int, teacher_layers: list[int]):
        super().__init__()
        self.teacher_layers = teacher_layers
        self.proj = nn.Linear(hidden, hidden)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(hidden))
            self.proj.bias.zero_()

    @staticmethod
    def choose_teacher_layers(layers: int, count: int = 4) -> list[int]:
        """About `count` evenly spaced teacher layers, always including the last."""
        stride = max(1, layers // count)
        return list(range(layers - 1, -1, -stride))[::-1][-count:]

    def forward(self, student_states: tuple[torch.Tensor, ...], teacher_states: tuple[torch.Tensor, ...],
                attention_mask: torch.Tensor) -> torch.Tensor:
        """`*_states` are HF `hidden_states` (embeddings first, then one entry per layer)."""
        real = attention_mask.bool()
        mapped = [self.proj(s[real].to(self.proj.weight.dtype)) for s in student_states[1:]]
        total, start = torch.zeros((), device=attention_mask.device), 0
        for t in self.teacher_layers:
            target = teacher_states[t + 1][real].to(self.proj.weight.dtype)
            losses = torch.stack([F.mse_loss(m, target) for m in mapped[start:]])
            best = int(losses.detach().argmin())
            total = total + losses[best]
            start += best
        return total / len(self.teacher_layers)
