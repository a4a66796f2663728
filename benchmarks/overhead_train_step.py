"""Overhead of masked training: one `bgeprune train` step vs a plain fine-tuning step, same model and batch.

Both steps: student forward, the same distillation loss against precomputed teacher embeddings,
backward, gradient clipping, AdamW. The masked step adds what `train` adds: a hard-concrete sample
of every gate, the hooks that apply it, the Lagrangian, and the gate and multiplier updates. The
teacher's forward pass is the same in both and is left out, so the ratio isolates the masks' cost.
The two kinds of step alternate so machine drift hits both; the median of each is reported.

With --tokens both steps also pay `distill.tokens` (per-token cosine of the last hidden states
against the teacher's), so the printed ratio is the masks' overhead with it, and a third, unmasked
step without it gives that term's own cost. `train.importance_init` only changes the gates' starting
values: it costs one scoring pass before step 1 (timed here as "importance scoring") and nothing per step.

The plain and masked steps train every weight, the word-embedding table included (train.freeze_embeddings
= false). With --frozen-table a third step, masked with the table frozen (the default), gives what freezing
saves: no dense gradient for the table and no AdamW update of it.

On CUDA (--device cuda) both steps run under bf16 autocast, as `train` does there, and the clock waits
for the GPU before every reading.

Run:
    python benchmarks/overhead_train_step.py --steps 20
    python benchmarks/overhead_train_step.py --steps 20 --device cuda --model builtin:bge-m3-random --text FILE
    python benchmarks/overhead_train_step.py --steps 20 --masks layer,ffn --tokens
    python benchmarks/overhead_train_step.py --steps 10 --masks layer,ffn --frozen-table --model DIR
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from bgeprune_cli.config import BaseDims, TargetSection
from bgeprune_cli.models.families import adapter_for
from bgeprune_cli.models.loading import load_model, load_tokenizer, read_config, resolve_base
from bgeprune_cli.models.probe import probe_batches, probe_texts
from bgeprune_cli.models.st_files import read_pooling
from bgeprune_cli.pruning.hooks import MaskHooks
from bgeprune_cli.pruning.importance import importance_scores
from bgeprune_cli.training.distill_model import autocast_for
from bgeprune_cli.training.gates import Lagrangian, MaskSet
from bgeprune_cli.training.losses import cosine_loss, similarity_kl, token_cosine_loss
from common import DATA

TEXT = DATA / "pydocs_train.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:all-minilm-l6-v2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--masks", default="layer,heads,ffn,hidden", help="mask types the masked step learns")
    parser.add_argument("--tokens", action="store_true", help="add distill.tokens (per-token cosine) to both steps")
    parser.add_argument("--frozen-table", action="store_true",
                        help="add a masked step with the word-embedding table frozen (train.freeze_embeddings)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--text", type=Path, default=TEXT, help="one passage per line (default: ../shared/data's "
                        "pydocs_train.txt)")
    args = parser.parse_args()
    device = torch.device(args.device)

    def clock() -> float:  # CUDA runs asynchronously: wait for the work queued so far before reading the time
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    torch.manual_seed(0)
    base = resolve_base(args.model)
    config = read_config(base)
    dims = BaseDims.from_config(config)
    pooling = read_pooling(base)
    tokenizer = load_tokenizer(base)
    texts = [line for line in args.text.read_text().splitlines() if line.strip()][:args.batch_size]
    batch = dict(tokenizer(texts, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt"))
    batch = {k: v.to(device) for k, v in batch.items()}
    teacher = load_model(base).to(device)
    with torch.no_grad(), autocast_for(device):
        teacher_states = teacher(**batch).last_hidden_state.float()
        target = pooling.pool(teacher_states, batch["attention_mask"])

    plain = load_model(base).to(device)
    types = args.masks.split(",")
    # Any feasible target: the constraint's cost does not depend on its value.
    target_section = TargetSection(mode="sparsity", sparsity=0.5)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-5)

    class Masked:
        """A student as `train` runs it: gates, hooks, Lagrangian and the three optimizers."""

        def __init__(self, frozen_table: bool):
            self.model = load_model(base).to(device)
            if frozen_table:
                self.model.get_input_embeddings().weight.requires_grad_(False)
            self.weights = [p for p in self.model.parameters() if p.requires_grad]
            self.gates = MaskSet(dims, types, init=3.0).to(device)
            self.lagrangian = Lagrangian(target_section, dims, types, warmup=10).to(device)
            self.hooks = MaskHooks(self.model, adapter_for(config["model_type"]), {}, dims.head_dim)
            self.generator = torch.Generator(device).manual_seed(0)
            self.opt = torch.optim.AdamW([{"params": self.weights, "lr": 1e-5},
                                          {"params": list(self.gates.parameters()), "lr": 0.1, "weight_decay": 0.0}])
            self.lambda_opt = torch.optim.AdamW(self.lagrangian.parameters(), lr=0.05, maximize=True, weight_decay=0.0)

        def step(self, step: int) -> None:
            self.opt.zero_grad(set_to_none=True)
            self.lambda_opt.zero_grad(set_to_none=True)
            self.hooks.z = self.gates.sample(self.gates.noise(self.generator))
            penalty, _ = self.lagrangian(self.gates.keep_probs(), step)
            (loss_of(self.model) + penalty).backward()
            torch.nn.utils.clip_grad_norm_(self.weights, 1.0)
            self.opt.step()
            self.lambda_opt.step()
            self.gates.clamp_()

    def loss_of(model, tokens: bool = args.tokens) -> torch.Tensor:
        with autocast_for(device):
            states = model(**batch).last_hidden_state.float()
        emb = pooling.pool(states, batch["attention_mask"])
        loss = cosine_loss(emb, target) + similarity_kl(emb, target, 0.05)
        if tokens:
            loss = loss + token_cosine_loss(states, teacher_states, batch["attention_mask"])
        return loss

    def plain_step(step: int, tokens: bool = args.tokens) -> None:
        plain_opt.zero_grad(set_to_none=True)
        loss_of(plain, tokens).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        plain_opt.step()

    steps = [("plain", plain_step), ("masked", Masked(frozen_table=False).step)]
    if args.tokens:
        steps.append(("plain without tokens", lambda step: plain_step(step, tokens=False)))
    if args.frozen_table:
        steps.append(("masked, table frozen", Masked(frozen_table=True).step))
    times = {name: [] for name, _ in steps}
    for step in range(args.steps + 3):
        for name, fn in steps:
            start = clock()
            fn(step)
            if step >= 3:  # warm-up steps are not timed
                times[name].append(clock() - start)
    plain_s, masked_s = statistics.median(times["plain"]), statistics.median(times["masked"])
    print(f"model {args.model}, batch {args.batch_size} x {batch['input_ids'].shape[1]} tokens, masks {types}, "
          f"tokens {'on' if args.tokens else 'off'}, "
          f"{f'{device} (bf16 autocast)' if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}, "
          f"{args.steps} timed steps each")
    print(f"plain step   {plain_s * 1000:8.1f} ms (median)")
    print(f"masked step  {masked_s * 1000:8.1f} ms (median)")
    print(f"overhead     {masked_s / plain_s:8.3f}x")
    if args.tokens:
        without = statistics.median(times["plain without tokens"])
        print(f"distill.tokens costs {plain_s / without:.3f}x a plain step without it ({without * 1000:.1f} ms)")
    if args.frozen_table:
        frozen = statistics.median(times["masked, table frozen"])
        print(f"masked step, table frozen {frozen * 1000:8.1f} ms (median): the masked step is "
              f"{masked_s / frozen:.2f}x that (train.freeze_embeddings saves {1 - frozen / masked_s:.0%} of a step)")
    start = clock()
    probes = [{k: v.to(device) for k, v in b.items()}
              for b in probe_batches(tokenizer, probe_texts(), max_length=args.max_length)]
    importance_scores(teacher, adapter_for(config["model_type"]), dims, types, probes)
    print(f"importance scoring (train.importance_init, once before step 1): {clock() - start:.2f} s")


if __name__ == "__main__":
    main()
