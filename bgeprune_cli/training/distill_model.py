"""The two sides of one distillation forward pass: the frozen teacher's outputs, and the student's losses.

`Teacher` runs the unpruned base (and, for bge-m3 bases, its sparse and ColBERT heads) under
no_grad, or reads the same outputs back from a `TeacherCache`; it counts its real forward passes
so a run can say how many the cache saved. `DistillModel` holds every trainable part of the
student side (the HF student with its mask hooks, the gates, the layer maps, the student's
heads) in one module, so that one DDP wrapper all-reduces all of their gradients; its forward
returns the weighted loss terms of one micro-batch.

Example:
    bgeprune train recipes/minilm-50pct.toml --teacher-cache ~/.cache/bgeprune/teacher
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .losses import (
    colbert_kl,
    contrastive_loss,
    cosine_loss,
    matryoshka_loss,
    similarity_kl,
    sparse_mse,
    token_cosine_loss,
    translation_loss,
)


@dataclass(frozen=True)
class TeacherNeeds:
    """Which teacher outputs a run's losses read, decided once: the teacher computes exactly these, the
    teacher cache stores exactly these and its key names them, so a cache can never serve entries that
    lack an output a loss now reads."""

    sparse: bool = False  # bge-m3 heads and distill.sparse > 0
    colbert: bool = False  # bge-m3 heads and distill.colbert > 0
    tokens: bool = False  # distill.tokens > 0, hidden kept (the states must share their width)
    layerwise: bool = False  # distill.layerwise > 0: every layer's states (the cache cannot hold them)

    @classmethod
    def of(cls, distill, has_heads: bool, types: list[str]) -> "TeacherNeeds":
        return cls(sparse=has_heads and distill.sparse > 0, colbert=has_heads and distill.colbert > 0,
                   tokens=distill.tokens > 0 and "hidden" not in types, layerwise=distill.layerwise > 0)

    @property
    def cache_fields(self) -> list[str]:
        """The per-text entries the cache stores: the pooled embedding and each token-level output."""
        return ["embedding"] + [name for name in ("sparse", "colbert", "tokens") if getattr(self, name)]


@dataclass
class TranslationBatch:
    sources: dict               # tokenized sources (the side the teacher embeds), on the device
    translations: dict          # tokenized translations, aligned with the sources
    source_texts: list[str]     # the sources themselves: the teacher cache's keys


@dataclass
class MicroBatch:
    batch: dict                 # tokenized texts, on the device
    texts: list[str]            # the texts themselves: the teacher cache's keys
    pairs: tuple | None = None  # tokenized (queries, positives, negatives or None) for the contrastive term
    translations: TranslationBatch | None = None  # for the translation term

    def translation_sources(self) -> "MicroBatch":
        """The translation sources as a batch of their own, for the teacher (and its cache) to embed."""
        return MicroBatch(self.translations.sources, self.translations.source_texts)


@dataclass
class TeacherOutputs:
    embedding: torch.Tensor                      # pooled [B, H], float32
    hidden_states: tuple | None = None           # per layer, only for the layer-wise term (never cached)
    sparse: torch.Tensor | None = None           # token weights [B, L]
    colbert: torch.Tensor | None = None          # normalised vectors [B, L-1, D], zero on padding
    tokens: torch.Tensor | None = None           # last hidden states [B, L, H], float32, for the per-token term


def enable_checkpointing(student: nn.Module) -> None:
    """HF gradient checkpointing: each layer's activations are recomputed in the backward pass.

    HF only checkpoints in train mode, so the student goes to train mode with every dropout set to 0
    (attention reads its probability from the same modules): its outputs stay exactly eval mode's.
    """
    if hasattr(student, "activation_checkpointing_enable"):  # the newer transformers 5.x name
        student.activation_checkpointing_enable({"use_reentrant": False})
    else:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    student.train()
    for module in student.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (weights stay fp32); full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def embed(model, batch: dict, pooling, hidden_states: bool, device: torch.device):
    with autocast_for(device):
        out = model(**batch, output_hidden_states=hidden_states)
    return pooling.pool(out.last_hidden_state.float(), batch["attention_mask"]), out


class Teacher:
    """The frozen base; `outputs` reads the cache first when there is one."""

    def __init__(self, model, heads, pooling, needs: TeacherNeeds, device: torch.device, cache=None):
        self.model, self.heads, self.pooling, self.device, self.cache = model, heads, pooling, device, cache
        self.needs = needs
        self.layerwise, self.want_tokens = needs.layerwise, needs.tokens
        self.want_sparse, self.want_colbert = needs.sparse, needs.colbert
        self.forwards = 0
        model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.forwards += 1

    @torch.no_grad()
    def outputs(self, micro: MicroBatch) -> TeacherOutputs:
        mask = micro.batch["attention_mask"]
        if self.cache is None:
            return self._forward(micro.batch)
        entries = self.cache.get(micro.texts)
        if None in entries:
            fresh = self._to_entries(self._forward(micro.batch), mask)
            self.cache.put([t for t, e in zip(micro.texts, entries) if e is None],
                           [f for f, e in zip(fresh, entries) if e is None])
            # Served from the cache even now: a text's output is then always the first one computed
            # for it (padding to other batch lengths moves float results in the last bits), so a
            # rerun from the full cache reproduces this run's losses exactly.
            entries = self.cache.get(micro.texts, count=False)
        return self._from_entries(entries, mask)

    def _forward(self, batch: dict) -> TeacherOutputs:
        embedding, out = embed(self.model, batch, self.pooling, self.layerwise, self.device)
        states, mask = out.last_hidden_state, batch["attention_mask"]
        return TeacherOutputs(embedding, out.hidden_states if self.layerwise else None,
                              self.heads.token_weights(states) if self.want_sparse else None,
                              self.heads.colbert_vectors(states, mask) if self.want_colbert else None,
                              states.float() if self.want_tokens else None)

    # Token-level outputs are stored at the text's real tokens only, so an entry does not depend on
    # how much padding its batch had; reading back scatters them into zeros at the real positions.
    def _to_entries(self, out: TeacherOutputs, mask: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        real = mask.bool()
        entries = []
        for i in range(mask.shape[0]):
            entry = {"embedding": out.embedding[i].cpu()}
            if out.sparse is not None:
                entry["sparse"] = out.sparse[i][real[i]].cpu()
            if out.colbert is not None:
                entry["colbert"] = out.colbert[i][real[i, 1:]].cpu()
            if out.tokens is not None:
                entry["tokens"] = out.tokens[i][real[i]].cpu()
            entries.append(entry)
        return entries

    def _from_entries(self, entries: list[dict[str, torch.Tensor]], mask: torch.Tensor) -> TeacherOutputs:
        real = mask.bool().cpu()
        embedding = torch.stack([e["embedding"] for e in entries]).to(self.device)
        sparse = colbert = None
        if self.want_sparse:
            sparse = torch.zeros(mask.shape, dtype=entries[0]["sparse"].dtype)
            for i, e in enumerate(entries):
                sparse[i, real[i]] = e["sparse"]
            sparse = sparse.to(self.device)
        if self.want_colbert:
            dim = entries[0]["colbert"].shape[-1]
            colbert = torch.zeros(mask.shape[0], mask.shape[1] - 1, dim, dtype=entries[0]["colbert"].dtype)
            for i, e in enumerate(entries):
                colbert[i, real[i, 1:]] = e["colbert"]
            colbert = colbert.to(self.device)
        tokens = None
        if self.want_tokens:
            tokens = torch.zeros(*mask.shape, entries[0]["tokens"].shape[-1], dtype=entries[0]["tokens"].dtype)
            for i, e in enumerate(entries):
                tokens[i, real[i]] = e["tokens"]
            tokens = tokens.to(self.device)
        return TeacherOutputs(embedding, None, sparse, colbert, tokens)


class DistillModel(nn.Module):
    """Student, gates, layer maps and student heads: everything whose gradient depends on the data."""

    def __init__(self, student, masks, layer_maps, heads, hooks, pooling, distill, use_cosine: bool,
                 device: torch.device):
        super().__init__()
        self.student, self.masks, self.layer_maps, self.heads = student, masks, layer_maps, heads
        self.hooks, self.pooling, self.distill, self.use_cosine, self.device = (
            hooks, pooling, distill, use_cosine, device)

    def forward(self, batch: dict, teacher: TeacherOutputs, noise: dict | None, fixed: dict | None,
                pairs: tuple | None, translations: TranslationBatch | None = None,
                teacher_sources: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Weighted loss terms of one micro-batch; gates sampled from the step's shared `noise` (or `fixed`).

        `teacher_sources`: the teacher's pooled embeddings of `translations.sources`."""
        distill = self.distill
        z = self.masks.sample(noise) if fixed is None else fixed
        self.hooks.z = z
        layerwise = self.layer_maps is not None
        student_emb, student_out = embed(self.student, batch, self.pooling, layerwise, self.device)
        terms: dict[str, torch.Tensor] = {}
        if self.use_cosine:
            terms["cosine"] = distill.cosine * cosine_loss(student_emb, teacher.embedding)
        if distill.similarity_kl > 0:
            terms["similarity_kl"] = distill.similarity_kl * similarity_kl(student_emb, teacher.embedding,
                                                                           distill.temperature)
        if layerwise:
            terms["layerwise"] = distill.layerwise * self.layer_maps(
                student_out.hidden_states, teacher.hidden_states, batch["attention_mask"])
        states, mask = student_out.last_hidden_state, batch["attention_mask"]
        if teacher.tokens is not None:
            terms["tokens"] = distill.tokens * token_cosine_loss(states, teacher.tokens, mask)
        if teacher.sparse is not None:
            terms["sparse"] = distill.sparse * sparse_mse(self.heads.sparse_logits(states), teacher.sparse, mask)
        if teacher.colbert is not None:
            vectors = self.heads.colbert_vectors(states, mask, z.get("hidden"))
            terms["colbert"] = distill.colbert * colbert_kl(vectors, teacher.colbert, mask, distill.temperature)
        if pairs is not None and distill.contrastive > 0:
            queries, positives, negatives = (embed(self.student, b, self.pooling, False, self.device)[0]
                                             if b is not None else None for b in pairs)
            terms["contrastive"] = distill.contrastive * contrastive_loss(queries, positives, negatives,
                                                                          distill.temperature)
        crossed = None
        if translations is not None and distill.translation > 0:
            sources, targets = (embed(self.student, b, self.pooling, False, self.device)[0]
                                for b in (translations.sources, translations.translations))
            terms["translation"] = distill.translation * translation_loss(
                sources, targets, teacher_sources, distill.temperature, self.use_cosine)
            crossed = (sources, targets, teacher_sources)
        if prefixes := distill.matryoshka_prefixes(student_emb.shape[-1]):
            terms["matryoshka"] = matryoshka_loss(student_emb, teacher.embedding, prefixes, distill.temperature,
                                                  distill.similarity_kl, crossed, distill.translation)
        return terms
