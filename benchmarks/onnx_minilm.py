"""all-MiniLM-L6-v2 at 50% as ONNX: int8 vs fp32 vs PyTorch quality on pydocs, in one bench table.

Builds the 50% export training-free (`bgeprune magnitude recipes/minilm-50pct.toml`, finalize-masks,
prune, export-hf --onnx: the point here is what int8 does to an export, not how good the masks are),
verifies it (the int8 agreement figures verify reports are printed), then benches the export's
int8 graph, fp32 graph and PyTorch model against the teacher in PyTorch and in ONNX int8.

    python benchmarks/onnx_minilm.py [--workdir /tmp/minilm-onnx] [--data ../shared/data/pydocs] [--repeats 4]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common import CAPTURE, DATA, MINILM_RECIPE, MINILM_TEACHER, bgeprune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/minilm-onnx"))
    parser.add_argument("--data", type=Path, default=DATA / "pydocs")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    run, out, report = args.workdir / "run", args.workdir / "export", args.workdir / "bench"
    bgeprune("magnitude", MINILM_RECIPE, "--run-dir", run, "--force")
    bgeprune("finalize-masks", run / "train", "--force")
    bgeprune("prune", run / "masks", "--force")
    bgeprune("export-hf", run, out, "--onnx", "--force")
    verified = json.loads(bgeprune("verify", out, "--json", stdout=CAPTURE).stdout)
    checks = {c["name"]: c for c in verified["checks"]}
    bgeprune("bench", out, "--backend", "onnx-int8,onnx,torch", "--compare", MINILM_TEACHER,
             "--compare-backend", "torch,onnx-int8", "--beir", args.data, "--batch-sizes", "32",
             "--seq-lengths", "128", "--repeats", args.repeats, "--no-memory", "--device", "cpu",
             "-o", report, "--force")
    result = json.loads((report / "report.json").read_text())
    print(f"\n$ python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}".rstrip())
    print(f"verify: {checks['onnx-parity']['message']}")
    print(f"verify: {checks['onnx-int8']['message']}")
    print(f"bench command: {result['command']}")
    ndcg = result["quality"]["beir"][args.data.name]["modes"]["dense"]
    print(f"{'entry':<40}{'nDCG@10':>9}{'vs teacher':>12}{'sentences/s':>13}{'x teacher torch':>17}")
    for key, row in result["headline"]["entries"].items():
        print(f"{row['label']:<40}{ndcg[key]['ndcg@10']:>9.4f}{ndcg[key]['ndcg@10'] / ndcg['base']['ndcg@10']:>11.1%}"
              f"{row.get('sentences_per_s', float('nan')):>13.1f}{row.get('speedup_vs_base', 1.0):>16.2f}x")


if __name__ == "__main__":
    main()
