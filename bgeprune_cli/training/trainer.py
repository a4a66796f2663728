"""One training step of `bgeprune train`, and the state a checkpoint must hold to repeat it exactly.

The student is the base model itself (HF names, unmodified modules) with `MaskHooks` applying a
fresh hard-concrete sample of every gate each step (pruning phase) or the finalized binary masks
(recovery phase). The frozen teacher is a second copy of the base (with bge-m3 bases, the sparse
and ColBERT heads too). Three optimizer groups with their own learning rates: weights (the
student's, its heads' and the layer maps'), gates (log_alpha), and the Lagrange multipliers,
which are *maximised*.

A step is a list of micro-batches (this rank's share of the step's batch, see distributed.py):
each is forwarded and back-propagated with its loss divided by their number, DDP averages the
gradients over ranks on the last one, and the optimizers step once. The step's reported loss is
the mean over all micro-batches of all ranks.

Example:
    bgeprune train recipes/smoke.toml
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..config import BaseDims, DistillSection, TargetSection, TrainSection
from ..errors import RecipeError
from ..pruning.hooks import MaskHooks, as_float_masks
from ..pruning.importance import log_alpha_from_importance
from ..pruning.masks import full_layout, log_alpha_of
from .distill_model import DistillModel, MicroBatch, Teacher, TeacherNeeds
from .distributed import Dist
from .gates import Lagrangian, MaskSet, expected_sizes
from .losses import LayerMaps

if TYPE_CHECKING:
    from ..models.families import Adapter
    from ..models.m3 import M3Heads
    from ..models.st_files import Pooling

GRAD_CLIP = 1.0
GATES_LR_FLOOR = 0.1  # the gates' learning rate at the end of the pruning phase, relative to lr_gates


@dataclass
class TrainModels:
    """What one run trains with: the student (the base's weights, trained), the frozen teacher, the base's
    bge-m3 heads (None otherwise), and the facts about the base the masks need."""

    student: torch.nn.Module
    teacher: torch.nn.Module
    heads: M3Heads | None
    adapter: Adapter
    dims: BaseDims
    pooling: Pooling


@dataclass
class StepResult:
    loss: float  # the distillation loss (what the student is judged by)
    terms: dict[str, float]
    penalty: float = 0.0
    gaps: dict[str, float] = field(default_factory=dict)  # expected − target sparsity per constraint
    finite: bool = True
    interrupt: bool = False  # some rank was asked to stop (Ctrl-C / SIGTERM): all stop after this step


class Trainer:
    def __init__(self, models: TrainModels, train: TrainSection, distill: DistillSection, target: TargetSection,
                 types: list[str], prune_steps: int, total_steps: int, dist: Dist, cache=None):
        student, teacher, heads, adapter, dims, pooling = (models.student, models.teacher, models.heads,
                                                           models.adapter, models.dims, models.pooling)
        self.target, self.student, self.pooling, self.dist, self.types = target, student, pooling, dist, types
        self.dims, self.device, self.prune_steps, self.total_steps = dims, dist.device, prune_steps, total_steps
        device = self.device
        self.base_params = full_layout(dims).encoder_params()
        self.masks = MaskSet(dims, types, train.gate_init).to(device)
        self.lagrangian = Lagrangian(target, dims, types, train.target_warmup_steps).to(device)
        self.layer_maps = (LayerMaps(dims.hidden, LayerMaps.choose_teacher_layers(dims.layers)).to(device)
                           if distill.layerwise > 0 else None)
        # Cosine needs the same output space; hidden pruning changes it, the similarity KL does not care.
        self.use_cosine = distill.cosine > 0 and "hidden" not in types
        if distill.matryoshka_dims and "hidden" in types:  # load_recipe says so with the line; this is the API
            raise RecipeError(["distill.matryoshka_dims: cannot be trained while hidden is pruned (the prefix of a "
                               "pruned width is not known until the masks are final); keep hidden, or drop "
                               "matryoshka_dims"])
        self.generator = torch.Generator(device=device).manual_seed(train.seed)
        self.fixed: dict[str, torch.Tensor] | None = None  # binary masks of the recovery phase
        self.pruned_expected: dict[str, float] | None = None  # expected sizes when the pruning phase ended
        self.hooks = MaskHooks(student, adapter, {}, dims.head_dim)
        # bge-m3's sparse and ColBERT heads: the student's train with it, the teacher's stay frozen.
        self.student_heads = copy.deepcopy(heads).to(device) if heads is not None else None
        teacher_heads = copy.deepcopy(heads).to(device).requires_grad_(False) if heads is not None else None
        # The per-token term needs the teacher's token states; like cosine it needs the same hidden dims.
        needs = TeacherNeeds.of(distill, heads is not None, types)
        self.use_tokens = needs.tokens
        self.teacher = Teacher(teacher, teacher_heads, pooling, needs, device, cache)
        # One module for everything DDP must all-reduce; in one process `wrap` returns it as is.
        self.model = self.dist.wrap(DistillModel(student, self.masks, self.layer_maps, self.student_heads, self.hooks,
                                                 pooling, distill, self.use_cosine, device))
        if train.freeze_embeddings:
            # The word-embedding table is most of a multilingual model (bge-m3: 256M of 568M parameters);
            # frozen, it costs no dense gradient and no AdamW update per step, and every token keeps the
            # base's vector, seen in the training text or not.
            student.get_input_embeddings().weight.requires_grad_(False)
        weights = [p for p in student.parameters() if p.requires_grad] \
            + (list(self.layer_maps.parameters()) if self.layer_maps else []) \
            + (list(self.student_heads.parameters()) if self.student_heads is not None else [])
        self.weights = weights
        self.optimizer = torch.optim.AdamW([
            {"params": weights, "lr": train.lr_weights, "weight_decay": 0.01},
            {"params": list(self.masks.parameters()), "lr": train.lr_gates, "weight_decay": 0.0},
        ])
        # maximize=True: gradient *ascent* on λ is what turns the penalty into a constraint.
        self.lambda_optimizer = torch.optim.AdamW(self.lagrangian.parameters(), lr=train.lr_lambda,
                                                  weight_decay=0.0, maximize=True)
        warmup = max(1, min(100, total_steps // 10))
        recover = max(1, total_steps - prune_steps)

        def weights_lr(step: int) -> float:
            # Linear warm-up, constant while gates move, then linear decay over the recovery phase.
            if step < warmup:
                return (step + 1) / warmup
            if step < prune_steps:
                return 1.0
            return max(0.0, 1 - (step - prune_steps) / recover)

        settle_from = min(train.target_warmup_steps, prune_steps)

        def gates_lr(step: int) -> float:
            # Once the target stops moving, anneal the gates (to 10%) so they settle on it instead of
            # oscillating around it; the multipliers keep their learning rate and keep pushing.
            if step < settle_from or prune_steps <= settle_from:
                return 1.0
            progress = (step - settle_from) / (prune_steps - settle_from)
            return max(GATES_LR_FLOOR, 1 - (1 - GATES_LR_FLOOR) * progress)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, [weights_lr, gates_lr])

    # ------------------------------------------------------------------ phases

    @torch.no_grad()
    def init_gates(self, scores: dict[str, torch.Tensor], init: float, spread: float) -> None:
        """Start each learned gate ranked as its importance score: log_alpha in [init − spread, init + spread]."""
        for name, a in self.masks.log_alpha.items():
            a.copy_(log_alpha_from_importance(scores[name], init, spread).to(a.device))
        self.masks.clamp_()

    def start_recovery(self) -> None:
        """Fix the masks by the finalize rule; from here on only weights train."""
        self.pruned_expected = self.expected()
        self.fixed = self.masks.finalized(self.target)

    def fix_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Recovery-only training from given masks: gates set to ±clamp so finalize reproduces them."""
        with torch.no_grad():
            for name, a in self.masks.log_alpha.items():
                a.copy_(log_alpha_of(masks[name]).to(a.device))
        self.fixed = {k: v.clone() for k, v in masks.items()}

    # ------------------------------------------------------------------ one step

    def step(self, step: int, micro_batches: list[MicroBatch], interrupt: bool = False) -> StepResult:
        """One optimisation step over this rank's micro-batches.

        A non-finite loss or gradient (on any rank) skips the update: weights, gates and λ untouched.
        Every rank still runs every backward, so the collectives stay matched.
        """
        pruning = self.fixed is None
        noise = self.masks.noise(self.generator) if pruning else None
        fixed = None if pruning else as_float_masks({k: v.to(self.device) for k, v in self.fixed.items()})
        self.optimizer.zero_grad(set_to_none=True)
        self.lambda_optimizer.zero_grad(set_to_none=True)
        n = len(micro_batches)
        sums: dict[str, torch.Tensor] = {}
        penalty, gaps = torch.zeros(()), {}
        for i, micro in enumerate(micro_batches):
            teacher = self.teacher.outputs(micro)
            sources = self.teacher.outputs(micro.translation_sources()).embedding if micro.translations else None
            with self.dist.no_sync(self.model, skip=i < n - 1):
                terms = self.model(micro.batch, teacher, noise, fixed, micro.pairs, micro.translations, sources)
                loss = sum(terms.values())
                total = loss
                if pruning:  # the same on every micro-batch (the gates do not move within a step)
                    penalty, gaps = self.lagrangian(self.masks.keep_probs(), step)
                    total = loss + penalty
                (total / n).backward()
            for name, value in {"loss": loss, **terms}.items():  # kept on the device: no sync per micro-batch
                sums[name] = sums.get(name, 0.0) + value.detach().float() / n
        # One collective for the logged numbers and the stop request; the mean is the same on every rank.
        names = list(sums)
        flag = torch.tensor(float(interrupt), device=sums["loss"].device)
        reduced = self.dist.reduce(torch.stack([sums[k] for k in names] + [flag]), "mean").cpu()
        means = dict(zip(names, reduced.tolist()))
        loss_value = means.pop("loss")
        result = StepResult(loss_value, means, float(penalty.detach()), gaps, interrupt=bool(reduced[-1] > 0))
        if not pruning:  # recovery trains weights only: the gates keep the values finalize reads
            for p in self.masks.parameters():
                p.grad = None
        grad_norm = torch.nn.utils.clip_grad_norm_(self.weights, GRAD_CLIP)
        if not (math.isfinite(loss_value + result.penalty) and math.isfinite(float(grad_norm))):
            result.finite = False
            self.scheduler.step()  # the step is consumed (its data too), so a resume stays aligned
            return result
        self.optimizer.step()
        if pruning:
            self.lambda_optimizer.step()
            self.masks.clamp_()
        self.scheduler.step()
        return result

    # ------------------------------------------------------------------ reporting

    @torch.no_grad()
    def expected(self) -> dict[str, float]:
        """Expected architecture now (keep probabilities; the fixed masks in recovery)."""
        probs = as_float_masks(self.fixed) if self.fixed is not None else self.masks.keep_probs()
        sizes = {k: float(v) for k, v in expected_sizes({k: v.float().cpu() for k, v in probs.items()},
                                                        self.dims).items()}
        sizes["encoder_fraction"] = sizes["encoder_params"] / self.base_params
        return sizes

    def sync_tensors(self) -> dict[str, torch.Tensor]:
        """What must be equal on every rank: gates, λ, and one sum per weight tensor (cheap to compare)."""
        return {**self.masks.scores(), **{f"lagrangian.{k}": v for k, v in self.lagrangian.state_dict().items()},
                "weights": torch.stack([p.detach().double().sum() for p in self.weights])}

    def lambdas(self) -> dict[str, float]:
        return {name: float(p.detach().mean()) for name, p in self.lagrangian.lambda_1.items()}

    # ------------------------------------------------------------------ checkpoint state

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        extras = {f"lagrangian.{k}": v for k, v in self.lagrangian.state_dict().items()}
        if self.layer_maps is not None:
            extras.update({f"layer_maps.{k}": v for k, v in self.layer_maps.state_dict().items()})
        if self.student_heads is not None:
            extras.update({f"m3.{k}": v for k, v in self.student_heads.state_dict().items()})
        return {"student": self.student.state_dict(), "gates": self.masks.scores(), "extras": extras}

    def state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "lambda_optimizer": self.lambda_optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load(self, tensors: dict[str, dict[str, torch.Tensor]], state: dict) -> None:
        self.student.load_state_dict(tensors["student"], strict=True)
        with torch.no_grad():
            for name, a in self.masks.log_alpha.items():
                a.copy_(tensors["gates"][name])
        extras = tensors["extras"]
        self.lagrangian.load_state_dict({k.removeprefix("lagrangian."): v for k, v in extras.items()
                                         if k.startswith("lagrangian.")}, strict=True)
        if self.layer_maps is not None:
            self.layer_maps.load_state_dict({k.removeprefix("layer_maps."): v for k, v in extras.items()
                                             if k.startswith("layer_maps.")}, strict=True)
        if self.student_heads is not None:
            self.student_heads.load_state_dict({k.removeprefix("m3."): v for k, v in extras.items()
                                                if k.startswith("m3.")}, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lambda_optimizer.load_state_dict(state["lambda_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
