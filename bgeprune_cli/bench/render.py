"""The tables `bgeprune bench` prints on stderr (model vs base vs ratio, for size, speed, memory, quality),
and its result line on stdout: the report it wrote.

With several backends (bench/backends.py) each (model, backend) entry gets its own column in the size,
memory and quality tables, and a Backends table puts every entry's throughput, memory and quality at
the headline point beside its ratio to the base (and to the base on the same backend).

Example:
    bgeprune bench out/smoke --compare builtin:tiny-xlm-roberta --beir tests/data/beir   # tables on stderr
"""

from __future__ import annotations

from ..ui import err, esc, out, table


def _num(value, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _ratio(model, base, fmt: str = ".2f") -> str:
    return f"{model / base:{fmt}}×" if model is not None and base else "-"


def _entries(r: dict) -> list[str]:
    """The table columns: every entry, MODEL's before the base's ("base" stands in when there is none)."""
    keys = list(r["models"])
    return keys if "base" in keys else keys + ["base"]


def _size_rows(r: dict) -> list[list]:
    models, keys = r["models"], _entries(r)
    m, b = models["model"], models.get("base")
    rows = []
    for key, name in (("total", "parameters"), ("encoder", "  encoder layers"), ("embeddings", "  embeddings"),
                      ("m3_heads", "  bge-m3 heads")):
        if any(models[k]["params"][key] for k in models):
            rows.append([name, *[_num(models[k]["params"][key]) if k in models else "-" for k in keys],
                         _ratio(m["params"][key], b["params"][key]) if b else "-"])
    if b and m.get("vocab") != b.get("vocab"):
        rows.append(["vocabulary (tokens)", *[_num(models[k]["vocab"]) if k in models else "-" for k in keys],
                     _ratio(m["vocab"], b["vocab"])])
    rows.append(["weights on disk (MB)", *[_num(models[k]["file_bytes"] / 1e6, ",.1f") if k in models else "-"
                                           for k in keys], _ratio(m["file_bytes"], b["file_bytes"]) if b else "-"])
    rows.append(["layers · hidden", *[f"{models[k]['layers']} · {models[k]['hidden']}" if k in models else "-"
                                      for k in keys], ""])
    return rows


def _labels(r: dict) -> list[str]:
    return [r["models"][k]["label"] if k in r["models"] else "base" for k in _entries(r)]


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


def _quality_rows(q: dict, keys: list[str]) -> list[list]:
    rows = []
    for name, data in q.get("beir", {}).items():
        for mode, values in data["modes"].items():
            for metric in ("ndcg@10", "mrr@10", "recall@100"):
                rows.append(_metric_row(f"{name} {metric}", mode, values, metric, keys))
    for name, data in q.get("bitext", {}).items():
        for mode, values in data["modes"].items():
            rows.append(_metric_row(f"bitext {name} ({data['pairs']} pairs)", mode, values, "accuracy", keys))
    for mode, values in q.get("bitext_mean", {}).items():
        rows.append(_metric_row("bitext mean accuracy", mode, values, "accuracy", keys))
    for mode, worst in q.get("bitext_worst", {}).items():
        rows.append(_worst_row("bitext worst language, accuracy", mode, worst, "accuracy", keys))
    for name, data in q.get("bitext", {}).items():
        for mode, values in data.get("cross_lingual", {}).items():
            rows.append(_metric_row(f"{name}→en retrieval nDCG@10", mode, values, "ndcg@10", keys))
    for mode, values in q.get("cross_lingual_mean", {}).items():
        rows.append(_metric_row("xx→en retrieval mean nDCG@10", mode, values, "ndcg@10", keys))
    for mode, worst in q.get("cross_lingual_worst", {}).items():
        rows.append(_worst_row("xx→en retrieval worst language, nDCG@10", mode, worst, "ndcg@10", keys))
    return rows


def _width_rows(q: dict, keys: list[str]) -> list[list]:
    """Per width: each model's value, its ratio to the base at that width, and each of model and base as a
    share of its own full-width value (what cutting the vectors cost it)."""
    def row(what: str, width: str, entry: dict, metric: str, of_full: dict) -> list:
        ratio = entry.get("ratio", {}).get(metric)
        shares = [of_full.get(k, {}).get(metric) for k in ("model", "base")]
        return [what, width, *["-" if entry.get(k, {}).get(metric) is None else f"{entry[k][metric]:.4f}"
                               for k in keys],
                "-" if ratio is None else f"{ratio:.1%}", *["-" if v is None else f"{v:.1%}" for v in shares]]

    rows = []
    for width in map(str, q.get("dims", [])):
        for name, data in q.get("beir", {}).items():
            entry = data["widths"][width]
            rows.append(row(f"{name} nDCG@10", width, entry, "ndcg@10", entry["of_full"]))
        for name, data in q.get("bitext", {}).items():
            entry = data["widths"][width]
            rows.append(row(f"bitext {name} accuracy", width, entry, "accuracy", entry["of_full"]))
        summary = q.get("bitext_widths", {}).get(width)
        if summary:
            mean = {**summary["mean"], "ratio": summary.get("mean_ratio", {})}
            shares = {k: {"accuracy": v} for k, v in summary["mean_of_full"].items()}
            rows.append(row("bitext mean accuracy", width, mean, "accuracy", shares))
            rows.append(_worst_row("bitext worst language, accuracy", width, summary["worst"], "accuracy", keys)
                        + ["", ""])
    return rows


def _worst_row(what: str, mode: str, worst: dict, metric: str, keys: list[str]) -> list:
    """Each entry's lowest value with its language; the ratio column: the lowest retention and its language."""
    cells = ["-" if k not in worst else f"{worst[k][metric]:.4f} ({worst[k]['language']})" for k in keys]
    ratio = worst.get("ratio")
    return [what, mode, *cells, "-" if ratio is None else f"{ratio[metric]:.1%} ({ratio['language']})"]


# How the index-compatibility tables name each direction, and the bitext view.
_DIRECTION_NAMES = {"model_queries_base_docs": "pruned queries × base index",
                    "base_queries_model_docs": "base queries × pruned index"}
_CROSSED = "pruned xx queries × base English index"


def _asymmetric_rows(q: dict) -> list[list]:
    """Index compatibility: one model's queries against the other's documents (dense)."""
    names, crossed = _DIRECTION_NAMES, _CROSSED
    rows = [[f"{name} nDCG@10", names[direction], f"{v['metrics']['ndcg@10']:.4f}",
             f"{v['ratio'].get('ndcg@10', 0):.1%}"]
            for name, data in q.get("beir", {}).items() for direction, v in data.get("asymmetric", {}).items()]
    rows += [[f"{name}→en retrieval nDCG@10", crossed, f"{v['metrics']['ndcg@10']:.4f}",
              f"{v['ratio'].get('ndcg@10', 0):.1%}"]
             for name, data in q.get("bitext", {}).items() for v in data.get("asymmetric", {}).values()]
    summary = q.get("bitext_asymmetric", {}).get("model_queries_base_docs")
    if summary:
        rows.append(["xx→en retrieval mean nDCG@10", crossed, f"{summary['metrics']['ndcg@10']:.4f}",
                     f"{summary['ratio'].get('ndcg@10', 0):.1%}"])
        rows.append(["xx→en retrieval worst language", crossed, summary["worst"]["language"],
                     f"{summary['worst']['ndcg@10']:.1%}"])
    return rows


def _asymmetric_mode_rows(q: dict) -> list[list]:
    """Index compatibility in the sparse, ColBERT and combined modes (bge-m3 heads on both sides)."""
    names, crossed = _DIRECTION_NAMES, _CROSSED

    def row(metric: str, mode: str, who: str, v: dict) -> list:
        return [metric, mode, who, f"{v['metrics']['ndcg@10']:.4f}", f"{v['ratio'].get('ndcg@10', 0):.1%}"]

    rows = [row(f"{name} nDCG@10", mode, names[direction], v) for name, data in q.get("beir", {}).items()
            for mode, per in data.get("asymmetric_modes", {}).items() for direction, v in per.items()]
    rows += [row(f"{name}→en retrieval nDCG@10", mode, crossed, v) for name, data in q.get("bitext", {}).items()
             for mode, per in data.get("asymmetric_modes", {}).items() for v in per.values()]
    for mode, summary in q.get("bitext_asymmetric_modes", {}).items():
        rows.append(row("xx→en retrieval mean nDCG@10", mode, crossed, summary))
        rows.append(["xx→en retrieval worst language", mode, crossed, summary["worst"]["language"],
                     f"{summary['worst']['ndcg@10']:.1%}"])
    return rows


def _metric_row(what: str, mode: str, values: dict, metric: str, keys: list[str]) -> list:
    ratio = values.get("ratio", {}).get(metric)
    cells = [values.get(k, {}).get(metric) for k in keys]
    return [what, mode, *["-" if v is None else f"{v:.4f}" for v in cells], "-" if ratio is None else f"{ratio:.1%}"]


def _backend_rows(r: dict) -> list[list]:
    rows = []
    for row in r["headline"]["entries"].values():
        rss = row.get("model_rss_bytes")
        rows.append([row["label"], f"{row['sentences_per_s']:,.1f}" if "sentences_per_s" in row else "-",
                     f"{row['speedup_vs_base']:.2f}×" if "speedup_vs_base" in row else "-",
                     f"{row['speedup_vs_base_same_backend']:.2f}×" if "speedup_vs_base_same_backend" in row else "-",
                     f"{row['p50_ms']:.1f}/{row['p99_ms']:.1f}" if "p50_ms" in row else "-",
                     _num(rss and rss / 1e6), "-" if row.get("quality") is None else f"{row['quality']:.4f}",
                     "-" if row.get("quality_vs_base") is None else f"{row['quality_vs_base']:.1%}"])
    return rows


def render_bench(r: dict) -> None:
    m, b = r["models"]["model"], r["models"].get("base")
    names = f"{m['label']} vs {b['label']}" if b else m["label"]
    env = r["environment"]
    err.print("[bold]bench[/] " + esc(f"{names} · {env['device']} {env.get('gpu', env['cpu'])} · {env['dtype']} · "
                                       f"{env['torch_threads']} threads"), highlight=False)
    err.print(table("Size", ["", *_labels(r), "ratio"], _size_rows(r)))
    if r["speed"]:
        err.print(table(f"Speed: sentences/s (median of {r['speed'][0]['model']['samples']}), latency ms p50/p99 and "
                        f"CV, {m['label']} · {b['label'] if b else ''}",
                        ["batch×len", m["label"], b["label"] if b else "base", "speedup", "FLOPs×", "efficiency",
                         "p50/p99 ms", "CV"], _speed_rows(r)))
    mem = r.get("memory")
    if mem:
        key = "peak_allocated_bytes" if env["device"].startswith("cuda") else "model_rss_bytes"
        what = "peak CUDA memory allocated" if key.startswith("peak") else "peak RSS above baseline"
        def value(role):
            return mem.get(role, {}).get(key)
        err.print(table(f"Memory ({what}, MB)", ["", *_labels(r), "ratio"], [[
            "load + one batch", *[_num(value(k) and value(k) / 1e6, ",.0f") for k in _entries(r)],
            _ratio(value("model"), value("base"))]]))
        for role in r["models"]:
            if "error" in mem.get(role, {}):
                err.print(f"[yellow]memory of {role} not measured:[/] {esc(mem[role]['error'])}", highlight=False)
    rows = _quality_rows(r["quality"], _entries(r))
    if rows:
        err.print(table("Quality", ["metric", "mode", *_labels(r), "ratio"], rows))
    rows = _width_rows(r["quality"], _entries(r))
    if rows:
        err.print(table("Output widths (dense): vectors cut to their first k dims and normalised, as truncate_dim does",
                        ["metric", "width", *_labels(r), "ratio", f"{m['label']} of its full width",
                         f"{b['label'] if b else 'base'} of its full width"], rows))
    if r.get("coverage"):
        err.print(table("Coverage of the trimmed vocabulary (texts tokenized exactly as by the base; tokens kept)",
                        ["data", "texts", "exact", "tokens kept"],
                        [[name, c["texts"], f"{c['exact']:.1%}", f"{c['tokens_kept']:.2%}"]
                         for name, c in r["coverage"].items()]))
    rows = _asymmetric_rows(r["quality"])
    if rows:
        err.print(table("Index compatibility (dense): keep the base's index, encode one side with the pruned model",
                        ["metric", "queries × index", "value", "vs base × base"], rows))
    rows = _asymmetric_mode_rows(r["quality"])
    if rows:
        err.print(table("Index compatibility of bge-m3's other modes: the base's sparse weights / ColBERT vectors "
                        "as the index", ["metric", "mode", "queries × index", "value", "vs base × base"], rows))
    if r["quality"].get("asymmetric_note"):
        err.print(f"[dim]{esc(r['quality']['asymmetric_note'])}[/]", highlight=False)
    if r["headline"].get("entries") and r["speed"]:
        h = r["headline"]
        quality = h.get("quality_metric", "quality")
        err.print(table(f"Backends at batch {h['batch']} × {h['length']} (× base: against {b['label'] if b else '-'}; "
                        f"same backend: against the base on the entry's backend)",
                        ["entry", "sentences/s", "× base", "× base, same backend", "p50/p99 ms", "peak MB",
                         f"{quality} (dense)", "vs base"], _backend_rows(r)))
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
    out.print(esc(f"→ {r['artifact']}" + (f" (picture: {r['report_png']})" if r.get("report_png") else "")),
              highlight=False)
