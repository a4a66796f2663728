"""What each command shows a person at the end (without --json): tables on stderr, the result on stdout.

The output rule, the same for every command: stdout carries what a script pipes into the next
command: `--json`'s one object, or without it the one line naming the result (the artifact a stage
wrote, and the command to run next; verify's verdict; bench's report). Tables, progress and messages
for people go to stderr (bench's tables: bench/render.py).

Example:
    bgeprune finalize-masks runs/smoke/train 2>/dev/null     # prints only: → runs/smoke/masks
"""

from __future__ import annotations

from .ui import err, esc, out, styled, table


def _result(artifact: str, next_command: str | None = None, note: str = "") -> None:
    line = f"→ {esc(artifact)}" + note + (f"\n  next: {esc(next_command)}" if next_command else "")
    out.print(line, highlight=False, soft_wrap=True)  # a path or URL to copy: never broken at the width


def check(r: dict) -> None:
    target = {k: v for k, v in r["resolved"]["target"].items() if v is not None}
    target = {} if list(target) == ["mode"] else target  # a vocabulary-only recipe
    if r.get("data"):
        err.print(table("Data sources (readable here)", ["recipe key", "source", "found"],
                        [[row["key"], row["source"], row["detail"]] for row in r["data"]]))
    if "vocab" in r:
        v, p = r["vocab"], r["params"]
        corpus = v["corpus"]
        err.print(table("Vocabulary trimming (dry run)", ["", "base", "after"], [
            ["tokens", f"{v['base']:,}", f"{v['kept']:,} ({v['fraction']:.1%})"],
            ["word-embedding parameters", f"{v['base_embedding_params']:,}", f"{v['embedding_params']:,}"],
            ["parameters" + ("" if p["encoder_counted"] else " (vocabulary only: sparsity mode learns the encoder)"),
             f"{p['base']:,}", f"{p['after']:,} ({p['after'] / p['base']:.1%})"],
            ["corpus", "", f"{corpus['texts']:,} texts, {corpus['tokens']:,} tokens, "
                           f"{corpus['distinct']:,} distinct"]]))
    out.print("[green]✓[/] " + esc(f"{r['recipe']} is valid: base {r['resolved']['base']['model']}, target "
                                  f"{target or 'unchanged'}" + (f", vocabulary {r['vocab']['kept']:,} of "
                                  f"{r['vocab']['base']:,} tokens" if "vocab" in r else "") +
                                  f", run dir {r['run_dir']}"), highlight=False)


def magnitude(r: dict) -> None:
    what = (f"scored {', '.join(r['masks'])}" if r["masks"]
            else "nothing to score (the recipe only trims the vocabulary)")
    out.print("[green]✓[/] " + esc(f"{what} → {r['artifact']}"), highlight=False)


def train(r: dict) -> None:
    expected, final = r["expected"], r["final_sizes"]
    rows = [[k, f"{expected[k]:.2f}", final[k], r["base_dims"][k]] for k in ("layers", "heads", "ffn", "hidden")]
    rows.append(["encoder params", f"{expected['encoder_params']:,.0f}", f"{r['encoder_params']:,}", ""])
    err.print(table(f"Trained {r['steps']} steps ({r['prune_steps']} pruning, {r['recovery_steps']} recovery) "
                    f"in {r['train_seconds']:.0f}s on {r['device']}",
                    ["", "expected (end of pruning)", "finalized", "base"], rows))
    if r.get("fixed_masks"):
        err.print(f"recovery only, with the masks of {esc(r['fixed_masks']['source'])}", highlight=False)
    if r["bad_steps"]:
        err.print(f"[yellow]{r['bad_steps']} steps skipped for a non-finite loss[/]")
    _warning(r.get("warning"))
    _result(r["artifact"], f"bgeprune finalize-masks {r['artifact']}")


def _warning(message: str | None) -> None:
    if message:
        err.print(f"[yellow]warning:[/] {esc(message)}", highlight=False)


def masks(r: dict) -> None:
    rows = [[e["index"], "kept" if e["kept"] else styled("[red]dropped[/]"),
             ",".join(map(str, e.get("heads", []))) or "-", e.get("ffn_kept", "-")] for e in r["layers"]]
    err.print(table("Finalized masks", ["layer", "status", "kept heads", "FFN kept"], rows))
    sizes, base = r["sizes"], r["base_sizes"]
    vocab = r.get("vocab")
    err.print(table("Architecture", ["", "base", "kept"],
                    [[k, base[k], sizes[k]] for k in ("layers", "heads", "ffn", "hidden")]
                    + [["encoder params", f"{r['base_encoder_params']:,}",
                        f"{r['encoder_params']:,} ({r['encoder_params'] / r['base_encoder_params']:.1%})"]]
                    + ([["vocabulary (tokens)", f"{vocab['base']:,}", f"{vocab['kept']:,} ({vocab['fraction']:.1%})"]]
                       if vocab else [])))
    _warning(r.get("warning"))
    _result(r["artifact"], note="" if r["stock_shape"] else
            "  [yellow](not a stock shape: export with --format padded)[/]")


def prune(r: dict) -> None:
    err.print(table("Pruned model", ["", "value"], [
        ["sizes", r["layout_sizes"]], ["stock shape", r["stock_shape"]],
        ["encoder params", f"{r['encoder_params']:,} of {r['base_encoder_params']:,} ({r['encoder_ratio']:.1%})"],
        *([["vocabulary (tokens)", f"{r['vocab']['kept']:,} of {r['vocab']['base']:,}"]] if r.get("vocab") else []),
        ["max |pruned - masked|", f"{max(r['parity_max_abs_diff'].values()):.2e}"], ["artifact", r["artifact"]]]))
    _result(r["artifact"])


def export_hf(r: dict) -> None:
    onnx = f" with onnx/ ({', '.join(r['onnx']['files'].values())})" if r.get("onnx") else ""
    out.print("[green]✓[/] " + esc(f"exported {r['sizes']} ({r['format']}){onnx} → {r['artifact']}\n"
                                  f"  next: bgeprune verify {r['artifact']}"), highlight=False)


def export_onnx(r: dict) -> None:
    info = r["onnx"]
    out.print("[green]✓[/] " + esc(f"onnx/ ({', '.join(info['files'].values())}; opset {info['opset']}; outputs "
                                  f"{', '.join(info['outputs'])}) → {r['artifact']}\n"
                                  f"  next: bgeprune verify {r['artifact']}"), highlight=False)


def card(r: dict) -> None:
    added = " and ".join(k for k in ("verify", "bench") if r[k])
    out.print("[green]✓[/] " + esc(f"{r['card']}: measured section from {added}; model-index with "
                                  f"{r['model_index_results']} result(s)\n"
                                  f"  next: bgeprune verify {r['artifact']}"), highlight=False)


def verify(r: dict) -> None:
    style = {"pass": styled("[green]pass[/]"), "fail": styled("[red]FAIL[/]"), "skip": styled("[dim]skip[/]"),
             "info": styled("[cyan]info[/]")}
    err.print(table(f"verify {r['model']}", ["check", "status", "details"],
                    [[c["name"], style[c["status"]], c["message"]] for c in r["checks"]]))
    if r["ok"]:
        out.print(f"[green]✓[/] {esc(r['model'])} verified", highlight=False)


def push(r: dict) -> None:
    where = ("pull request " if r["revision"].startswith("refs/pr/") else "branch ") + r["revision"]
    err.print(esc(f"pushed {r['files']} files of {r['export']} to {r['repo_id']} ({where}, commit {r['oid'][:8]})"),
              highlight=False, soft_wrap=True)
    _result(r["url"])
