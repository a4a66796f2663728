"""Matryoshka output widths on a benchmark point: the student trained with `distill.matryoshka_dims`
against the same point trained without, and the teacher cut naively, at every width `bench --dims`
measured. Reads two finished bench reports (each against the teacher, in its own run) and prints one
table: per width, each model's pydocs nDCG@10 and pooled / worst-language bitext accuracy as a share
of the teacher's full-width value, and each student's share of its own full width.

    python benchmarks/quality_multilingual_point.py --out runs/ml-300-plain --steps 300 --dims 192,96
    python benchmarks/quality_multilingual_point.py --out runs/ml-300-matryoshka --steps 300 --dims 192,96 \\
        --set 'distill.matryoshka_dims=[384,192,96]'
    python benchmarks/quality_matryoshka.py runs/ml-300-plain/bench runs/ml-300-matryoshka/bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _full(quality: dict, who: str) -> dict:
    values = {}
    if "pydocs" in quality.get("beir", {}):
        values["pydocs nDCG@10"] = quality["beir"]["pydocs"]["modes"]["dense"][who]["ndcg@10"]
    if quality.get("bitext_mean"):
        values["bitext pooled"] = quality["bitext_mean"]["dense"][who]["accuracy"]
        values["bitext worst language"] = quality["bitext_worst"]["dense"][who]["accuracy"]
    return values


def _cut(quality: dict, who: str, width: str) -> dict:
    values = {}
    if "pydocs" in quality.get("beir", {}):
        values["pydocs nDCG@10"] = quality["beir"]["pydocs"]["widths"][width][who]["ndcg@10"]
    summary = quality.get("bitext_widths", {}).get(width)
    if summary:
        values["bitext pooled"] = summary["mean"][who]["accuracy"]
        values["bitext worst language"] = summary["worst"][who]["accuracy"]
    return values


def table(plain: dict, matryoshka: dict) -> list[str]:
    p, m = plain["quality"], matryoshka["quality"]
    teacher = _full(p, "base")
    widths = [str(k) for k in p.get("dims", []) if k in m.get("dims", [])]
    full = str(plain["models"]["model"]["hidden"])
    rows = ["| width | metric | teacher cut | student | Matryoshka student | student / its full | "
            "Matryoshka / its full |", "|---|---|---|---|---|---|---|"]
    for width in [full, *widths]:
        cut = {"teacher": teacher if width == full else _cut(p, "base", width),
               "student": _full(p, "model") if width == full else _cut(p, "model", width),
               "matryoshka": _full(m, "model") if width == full else _cut(m, "model", width)}
        for metric, base in teacher.items():
            own = [cut[k][metric] / _full(q, "model")[metric] for k, q in (("student", p), ("matryoshka", m))]
            rows.append(f"| {width} | {metric} | {cut['teacher'][metric] / base:.1%} | "
                        f"{cut['student'][metric] / base:.1%} | {cut['matryoshka'][metric] / base:.1%} | "
                        f"{own[0]:.1%} | {own[1]:.1%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plain", type=Path, help="bench-report of the student trained without Matryoshka")
    parser.add_argument("matryoshka", type=Path, help="bench-report of the student trained with it")
    args = parser.parse_args()
    plain, matryoshka = (json.loads((d / "report.json").read_text()) for d in (args.plain, args.matryoshka))
    print("shares of the teacher's full-width value (teacher, both students measured against the same teacher)")
    print("\n".join(table(plain, matryoshka)))


if __name__ == "__main__":
    main()
