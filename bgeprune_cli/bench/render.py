"""The tables `bgeprune bench` prints on stderr: model vs base vs ratio, for size, speed, memory, quality.

Example:
    bgeprune bench out/smoke --compare builtin:tiny-xlm-roberta --beir tests/data/beir   # tables on stderr
"""

from __future__ import annotations

from ..ui import err, esc, table


def _num(value, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _ratio(model, base, fmt: str = ".2f") -> str:
    return f"{model / base:{fmt}}×" if model is not None and base else "-"


def _size_rows(r: dict) -> list[list]:
    m, b = r["models"]["model"], r["models"].get("base")
    rows = []
    for key, name in (("total", "parameters"), ("encoder", "  encoder layers"), ("embeddings", "  embeddings"),
                      ("m3_heads", "  bge-m3 heads")):
        if m["params"][key] or (b and b["params"][key]):
            rows.append([name, _num(m["params"][key]), _num(b["params"][key]) if b else "-",
                         _ratio(m["params"][key], b["params"][key]) if b else "-"])
    rows.append(["weights on disk (MB)", _num(m["file_bytes"] / 1e6, ",.1f"),
                 _num(b["file_bytes"] / 1e6, ",.1f") if b else "-", _ratio(m["file_bytes"], b["file_bytes"]) if b else "-"])
    rows.append(["layers · hidden", f"{m['layers']} · {m['hidden']}", f"{b['layers']} · {b['hidden']}" if b else "-", ""])
    return rows


def _speed_rows(r: dict) -> list[list]:
    rows = []
    for p in r["speed"]:
        m, base = p["model"], p.get("base")
        rows.append([f"{p['batch']}×{p['length']}", f"{m['sentences_per_s']:,.1f}",
                     f"{base['sentences_per_s']:,.1f}" if base else "-",
                     f"{p['speedup']:.2f}×" if base else "-", f"{p['flops_speedup']:.2f}×" if base else "-",
                     f"{p['speedup_efficiency']:.2f}" if base else "-",
                     f"{m['p50_ms']:.1f}/{m['p99_ms']:.1f}" + (f" · {base['p50_ms']:.1f}/{base['p99_ms']:.1f}"
                                                              if base else ""),
                     f"{m['cv']:.0%}" + (f" · {base['cv']:.0%}" if base else "")])
    return rows


def _quality_rows(q: dict) -> list[list]:
    rows = []
    for name, data in q.get("beir", {}).items():
        for mode, values in data["modes"].items():
            for metric in ("ndcg@10", "mrr@10", "recall@100"):
                rows.append(_metric_row(f"{name} {metric}", mode, values, metric))
    for name, data in q.get("bitext", {}).items():
        for mode, values in data["modes"].items():
            rows.append(_metric_row(f"bitext {name} ({data['pairs']} pairs)", mode, values, "accuracy"))
    for mode, values in q.get("bitext_mean", {}).items():
        rows.append(_metric_row("bitext mean accuracy", mode, values, "accuracy"))
    return rows


def _asymmetric_rows(q: dict) -> list[list]:
    """Index compatibility: one model's queries against the other's documents (dense)."""
    names = {"model_queries_base_docs": "pruned queries × base index", "base_queries_model_docs": "base queries × pruned index"}
    return [[f"{name} nDCG@10", names[direction], f"{v['metrics']['ndcg@10']:.4f}", f"{v['ratio'].get('ndcg@10', 0):.1%}"]
            for name, data in q.get("beir", {}).items() for direction, v in data.get("asymmetric", {}).items()]


def _metric_row(what: str, mode: str, values: dict, metric: str) -> list:
    base = values.get("base", {}).get(metric)
    ratio = values.get("ratio", {}).get(metric)
    return [what, mode, f"{values['model'][metric]:.4f}", "-" if base is None else f"{base:.4f}",
            "-" if ratio is None else f"{ratio:.1%}"]


def render_bench(r: dict) -> None:
    m, b = r["models"]["model"], r["models"].get("base")
    names = f"{m['label']} vs {b['label']}" if b else m["label"]
    env = r["environment"]
    err.print("[bold]bench[/] " + esc(f"{names} · {env['device']} {env.get('gpu', env['cpu'])} · {env['dtype']} · "
                                       f"{env['torch_threads']} threads"), highlight=False)
    err.print(table("Size", ["", m["label"], b["label"] if b else "base", "ratio"], _size_rows(r)))
    if r["speed"]:
        err.print(table(f"Speed: sentences/s (median of {r['speed'][0]['model']['samples']}), latency ms p50/p99 and "
                        f"CV, {m['label']} · {b['label'] if b else ''}",
                        ["batch×len", m["label"], b["label"] if b else "base", "speedup", "FLOPs×", "efficiency",
                         "p50/p99 ms", "CV"], _speed_rows(r)))
    mem = r.get("memory")
    if mem:
        key = "peak_allocated_bytes" if env["device"].startswith("cuda") else "model_rss_bytes"
        what = "peak CUDA memory allocated" if key.startswith("peak") else "peak RSS above baseline"
        value = lambda role: mem.get(role, {}).get(key)
        err.print(table(f"Memory ({what}, MB)", ["", m["label"], b["label"] if b else "base", "ratio"], [[
            "load + one batch", _num(value("model") and value("model") / 1e6, ",.0f"),
            _num(value("base") and value("base") / 1e6, ",.0f"), _ratio(value("model"), value("base"))]]))
        for role in ("model", "base"):
            if "error" in mem.get(role, {}):
                err.print(f"[yellow]memory of {role} not measured:[/] {esc(mem[role]['error'])}", highlight=False)
    rows = _quality_rows(r["quality"])
    if rows:
        err.print(table("Quality", ["metric", "mode", m["label"], b["label"] if b else "base", "ratio"], rows))
    rows = _asymmetric_rows(r["quality"])
    if rows:
        err.print(table("Index compatibility (dense): keep the base's index, encode one side with the pruned model",
                        ["metric", "queries × index", "value", "vs base × base"], rows))
    if r["quality"].get("asymmetric_note"):
        err.print(f"[dim]{esc(r['quality']['asymmetric_note'])}[/]", highlight=False)
    agreement = r["quality"].get("agreement")
    if agreement:
        err.print(table(f"Agreement with the base on {agreement['texts']} texts", ["mode", "measure", "value"], [
            [mode, k, f"{v:.4f}"] for mode, a in agreement["modes"].items() for k, v in a.items()
            if isinstance(v, float)]))
    if r["quality"].get("note"):
        err.print(f"[yellow]{esc(r['quality']['note'])}[/]", highlight=False)
    h = r["headline"]
    if "speedup" in h:
        quality = (f"; {h['quality_metric']} {h['quality_ratio']:.1%} of the base"
                   if h.get("quality_ratio") is not None else "")
        err.print(f"[bold]headline[/] batch {h['batch']} × {h['length']}: {h['speedup']:.2f}× faster, FLOPs "
                  f"predict {h['flops_speedup']:.2f}× → speedup efficiency {h['speedup_efficiency']:.2f}{quality}",
                  highlight=False)
    err.print(esc(f"→ {r['artifact']}" + (f" (picture: {r['report_png']})" if r.get("report_png") else "")),
              highlight=False)
