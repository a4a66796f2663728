"""What was measured, in the model card: verify's verdicts and bench's numbers as Markdown, and bench's
quality as the `model-index` front matter the Hub reads (`bgeprune card`).

The section sits between two HTML comments (card_sections.py), so writing it again replaces it and
nothing else; every number is copied from the reports with the command that produced it, never recomputed.

Example:
    bgeprune verify out/smoke -o runs/verify/smoke && bgeprune bench out/smoke --compare builtin:tiny-xlm-roberta \\
        -o runs/bench/smoke && bgeprune card out/smoke --verify runs/verify/smoke --bench runs/bench/smoke
"""

from __future__ import annotations

import re

import yaml

from .card_sections import with_section

_FRONT = re.compile(r"^---\n(.*?)\n---\n", re.DOTALL)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def verify_section(report: dict) -> list[str]:
    verdict = "passed" if report["ok"] else "**failed**"
    lines = [f"### Verified: {verdict}\n",
             "Each check of `bgeprune verify` on this directory, as its report gives it:\n",
             "| check | status | result |", "|---|---|---|"]
    lines += [f"| {c['name']} | {c['status']} | {_cell(c['message'])} |" for c in report["checks"]]
    return lines + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def bench_section(report: dict) -> list[str]:
    env, head, size = report["environment"], report.get("headline", {}), report.get("size_ratio", {})
    base = report["models"].get("base", {}).get("label", "the base")
    where = f"{env['device']} ({env.get('gpu') or env.get('cpu')}), {env['dtype']}, torch {env['versions']['torch']}"
    lines = [f"### Against `{base}`, measured by bench\n", f"`{report['command']}` on {where}.\n"]
    if "speedup" in head:
        lines.append(f"Speed at batch {head['batch']} × {head['length']} tokens: **{head['speedup']:.2f}×** the base's "
                     f"throughput (FLOPs predict {head['flops_speedup']:.2f}×).")
    if size:
        lines.append(f"Size: encoder parameters {_pct(size.get('params_encoder'))} of the base's, all parameters "
                     f"{_pct(size.get('params_total'))}, weights on disk {_pct(size.get('file_bytes'))}.")
    lines.append("")
    quality = report.get("quality") or {}
    rows = _quality_rows(quality)
    if rows:
        lines += ["| data | metric | mode | this model | base | retention |", "|---|---|---|---|---|---|", *rows, ""]
    coverage = report.get("coverage") or {}
    if coverage:  # a trimmed vocabulary: how much of each data set still tokenizes as with the base
        lines += ["Trimmed vocabulary: texts tokenized exactly as by the base, and the base's tokens kept:\n",
                  "| data | texts | tokenized as by the base | tokens kept |", "|---|---|---|---|",
                  *(f"| {_cell(name)} | {c['texts']:,} | {_pct(c['exact'])} | {_pct(c['tokens_kept'])} |"
                    for name, c in coverage.items()), ""]
    widths = _width_rows(quality)
    if widths:
        lines += ["Output widths (vectors cut to their first k dims and normalised, the base's too):\n",
                  "| data | metric | width | this model | base cut alike | this model / its full width |",
                  "|---|---|---|---|---|---|", *widths, ""]
    return lines


def _row(data: str, metric: str, mode: str, values: dict, key: str) -> str:
    return (f"| {data} | {metric} | {mode} | {_num(values.get('model', {}).get(key))} | "
            f"{_num(values.get('base', {}).get(key))} | {_pct(values.get('ratio', {}).get(key))} |")


def _quality_rows(q: dict) -> list[str]:
    modes = q.get("modes", ["dense"])  # report.json sorts its keys; this is bench's order, dense first
    rows = [_row(name, "nDCG@10", mode, data["modes"][mode], "ndcg@10")
            for name, data in q.get("beir", {}).items() for mode in modes]
    for name, data in q.get("bitext", {}).items():
        rows.append(_row(f"bitext {name}", "accuracy", "dense", data["modes"]["dense"], "accuracy"))
    if q.get("bitext_mean"):
        rows.append(_row("bitext, mean over languages", "accuracy", "dense", q["bitext_mean"]["dense"], "accuracy"))
        worst = q["bitext_worst"]["dense"]
        ratio = worst.get("ratio")
        rows.append(f"| bitext, worst language | accuracy | dense | {_num(worst['model']['accuracy'])} "
                    f"({worst['model']['language']}) | {_num(worst.get('base', {}).get('accuracy'))} | "
                    + (f"{_pct(ratio['accuracy'])} ({ratio['language']}) |" if ratio else "- |"))
    if q.get("cross_lingual_mean"):
        rows.append(_row("xx→en retrieval, mean", "nDCG@10", "dense", q["cross_lingual_mean"]["dense"], "ndcg@10"))
    crossed_by_mode = {"dense": q.get("bitext_asymmetric", {}).get("model_queries_base_docs"),
                       **q.get("bitext_asymmetric_modes", {})}
    for mode, crossed in crossed_by_mode.items():
        if crossed:
            rows.append(f"| this model's xx queries × the base's English index | nDCG@10 | {mode} | "
                        f"{_num(crossed['metrics']['ndcg@10'])} | | {_pct(crossed['ratio'].get('ndcg@10'))} "
                        f"(worst {crossed['worst']['language']}: {_pct(crossed['worst']['ndcg@10'])}) |")
    for name, data in q.get("beir", {}).items():
        indexes = {"dense": data.get("asymmetric", {}), **data.get("asymmetric_modes", {})}
        for mode, directions in indexes.items():
            compatible = directions.get("model_queries_base_docs")
            if compatible:
                rows.append(f"| {name}: this model's queries × the base's index | nDCG@10 | {mode} | "
                            f"{_num(compatible['metrics']['ndcg@10'])} | | "
                            f"{_pct(compatible['ratio'].get('ndcg@10'))} |")
    return rows


def _width_rows(q: dict) -> list[str]:
    rows = []
    for width in map(str, q.get("dims", [])):
        for name, data in q.get("beir", {}).items():
            entry = data["widths"][width]
            rows.append(f"| {name} | nDCG@10 | {width} | {_num(entry['model']['ndcg@10'])} | "
                        f"{_num(entry.get('base', {}).get('ndcg@10'))} | "
                        f"{_pct(entry['of_full']['model'].get('ndcg@10'))} |")
        summary = q.get("bitext_widths", {}).get(width)
        if summary:
            rows.append(f"| bitext, mean over languages | accuracy | {width} | "
                        f"{_num(summary['mean']['model']['accuracy'])} | "
                        f"{_num(summary['mean'].get('base', {}).get('accuracy'))} | "
                        f"{_pct(summary['mean_of_full'].get('model'))} |")
    return rows


def model_index(title: str, report: dict) -> list[dict]:
    """bench's quality of this model in the Hub's `model-index` form (one result per data set)."""
    quality, results = report.get("quality") or {}, []
    for name, data in quality.get("beir", {}).items():
        metrics = [{"type": "ndcg_at_10", "value": round(data["modes"][mode]["model"]["ndcg@10"], 4),
                    "name": f"nDCG@10 ({mode})"} for mode in quality.get("modes", ["dense"])]
        results.append({"task": {"type": "Retrieval"}, "dataset": {"name": name, "type": name}, "metrics": metrics})
    for name, data in quality.get("bitext", {}).items():
        results.append({"task": {"type": "BitextMining"}, "dataset": {"name": f"bitext {name}", "type": name},
                        "metrics": [{"type": "accuracy", "value": round(data["modes"]["dense"]["model"]["accuracy"], 4),
                                     "name": "accuracy (dense)"}]})
    return [{"name": title, "results": results}] if results else []


def with_measured(card: str, section: list[str], index: list[dict]) -> str:
    """`card` with its measured section (replaced where it was, else appended) and its model-index."""
    card = with_section(card, "measured", ["## Measured\n", *section])
    match = _FRONT.match(card)
    front = (yaml.safe_load(match.group(1)) if match else None) or {}
    front.pop("model-index", None)
    if index:
        front["model-index"] = index
    body = card[match.end():] if match else card
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body


def card_title(card: str) -> str:
    match = re.search(r"^# (.+)$", card, re.MULTILINE)
    return match.group(1).strip() if match else "model"
