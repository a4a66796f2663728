"""Distillation losses for embedding models (docs/design.md, Distillation): what the student must keep of the teacher.

Embedding models are judged by the geometry of their outputs, so besides matching each vector
(cosine, only when the output dims match) the student matches the teacher's in-batch similarity
distribution (KL), which survives hidden pruning, and optionally every token's last hidden state
(per-token cosine, also only when the dims match). For bge-m3 bases the sparse head matches the
teacher's token weights (MSE) and ColBERT its in-batch late-interaction scores (KL). Optional:
layer-wise MSE through a learned map (CoFi), a contrastive loss on labelled pairs, and on translation
pairs multilingual knowledge distillation: a source and its translation both pulled to the teacher's
embedding of the source (Reimers & Gurevych, 2020), which ties each language to the others.

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


def token_cosine_loss(student_states: torch.Tensor, teacher_states: torch.Tensor,
                      attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean 1 − cos between the student's and the teacher's last hidden state of every real token.

    A pooled vector is one number per text to match; every token's state is many, and they are what
    mean pooling averages and ColBERT reads, so they pin the student's output space down far more.
    """
    real = attention_mask.bool()
    return cosine_loss(student_states[real].float(), teacher_states[real].float())


def _off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """Row i: scores of text i against every other text of the batch (its trivial self-match removed)."""
    n = scores.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    return scores.masked_select(keep).view(n, n - 1)


def _score_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) between the rows of two in-batch score matrices, self-matches removed."""
    log_p_teacher = F.log_softmax(_off_diagonal(teacher_scores) / temperature, dim=-1)
    log_p_student = F.log_softmax(_off_diagonal(student_scores) / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


def _cosines(embeddings: torch.Tensor) -> torch.Tensor:
    normed = F.normalize(embeddings.float(), dim=-1)
    return normed @ normed.T


def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) between in-batch similarity distributions; needs no matching dims."""
    return _score_kl(_cosines(student), _cosines(teacher), temperature)


def cross_lingual_kl(student_sources: torch.Tensor, student_translations: torch.Tensor,
                     teacher_sources: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) over each translation's similarities to every source of the batch: the
    student's cos(translation i, source j) against the teacher's cos(source i, source j).

    The rows keep their diagonal (unlike `similarity_kl`): a translation matching its own source is the
    point, and the teacher's target puts it where the source itself is. Needs no matching dims.
    """
    student = F.normalize(student_translations.float(), dim=-1) @ F.normalize(student_sources.float(), dim=-1).T
    log_p_teacher = F.log_softmax(_cosines(teacher_sources) / temperature, dim=-1)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


def translation_loss(student_sources: torch.Tensor, student_translations: torch.Tensor,
                     teacher_sources: torch.Tensor, temperature: float, same_width: bool) -> torch.Tensor:
    """The translation-pair term: the cross-lingual similarity KL, plus (when the output width is kept)
    the mean of 1 − cos(student(source), teacher(source)) and 1 − cos(student(translation), teacher(source)).

    Zero when the student embeds every source and its translation as the teacher embeds the source.
    """
    loss = cross_lingual_kl(student_sources, student_translations, teacher_sources, temperature)
    if same_width:
        loss = loss + (cosine_loss(student_sources, teacher_sources)
                       + cosine_loss(student_translations, teacher_sources)) / 2
    return loss


def prefix(embeddings: torch.Tensor, width: int) -> torch.Tensor:
    """The first `width` dims of each row, L2-normalised: what a user gets with truncate_dim=width."""
    return F.normalize(embeddings[..., :width].float(), dim=-1)


def matryoshka_loss(student: torch.Tensor, teacher: torch.Tensor, prefixes: list[tuple[int, float]],
                    temperature: float, similarity_weight: float = 1.0,
                    translations: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                    translation_weight: float = 0.0) -> torch.Tensor:
    """Σ_k w_k · (similarity_weight · KL of the width-k prefix's in-batch similarities against the teacher's
    full-width ones, + translation_weight · the same for the cross-lingual similarities of the translation
    pairs `translations` = (student sources, student translations, teacher sources)).

    `prefixes`: (width, weight) pairs below the full width (the full width is the existing terms). The
    teacher is never truncated: each prefix learns the teacher's whole geometry, not its truncation's.
    """
    loss = student.new_zeros((), dtype=torch.float32)
    for width, weight in prefixes:
        term = similarity_weight * similarity_kl(prefix(student, width), teacher, temperature)
        if translations is not None and translation_weight > 0:
            sources, targets, teacher_sources = translations
            term = term + translation_weight * cross_lingual_kl(prefix(sources, width), prefix(targets, width),
                                                                teacher_sources, temperature)
        loss = loss + weight * term
    return loss


def sparse_mse(student_logits: torch.Tensor, teacher_weights: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
    """bge-m3 sparse head: MSE to the teacher's per-token weights [B, L] over real tokens.

    Where the teacher's weight is positive the student's *pre-ReLU* value is pulled to it, so a token
    the student has pushed below zero still gets a gradient (plain MSE after the ReLU lets the head
    die: pruning shifts the states, every weight turns negative and nothing pulls them back). Where
    the teacher's weight is zero only a positive student weight is penalised, as in MSE after ReLU.
    """
    real = attention_mask.bool()
    target = teacher_weights[real].float()
    logits = student_logits[real]
    prediction = torch.where(target > 0, logits, torch.relu(logits))
    return F.mse_loss(prediction, target)


def colbert_in_batch_scores(vectors: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, B] late-interaction scores of every text (as query) against every text (as passage).

    `vectors` [B, T, D] are the normalised ColBERT vectors of the tokens after CLS; `attention_mask`
    the batch's mask, so mask[:, 1:] marks real tokens. Padding never wins a max, and the mean runs
    over the query's real tokens (as FlagEmbedding's score does).
    """
    real = attention_mask[:, 1:].to(vectors.dtype)
    token_scores = torch.einsum("itd,jsd->itjs", vectors, vectors)
    # Dot products of unit vectors are >= -1, so -2 marks padding without the NaNs of -inf * 0.
    token_scores = token_scores.masked_fill(real[None, None, :, :] == 0, -2.0)
    best = token_scores.max(-1).values  # [B(query), T, B(passage)]
    return (best * real[:, :, None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)


def colbert_kl(student_vectors: torch.Tensor, teacher_vectors: torch.Tensor, attention_mask: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """bge-m3 ColBERT head: KL(teacher ‖ student) over in-batch late-interaction score distributions."""
    return _score_kl(colbert_in_batch_scores(student_vectors, attention_mask),
                     colbert_in_batch_scores(teacher_vectors.float(), attention_mask), temperature)


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
