"""Child process of `bgeprune verify`: load an export the way users will, in a fresh interpreter.

    python -m bgeprune_cli.verification.fresh_load OUT_DIR RESULT_DIR [MAX_LENGTH]

Loads `AutoModel.from_pretrained(OUT, output_loading_info=True, dtype=float32)`, the tokenizer
and `SentenceTransformer(OUT)`; writes `RESULT_DIR/loading.json` (loading info, or the error) and
`RESULT_DIR/outputs.safetensors` (probe outputs, with bge-m3's sparse and ColBERT outputs when the
directory has head files) for the parent to compare. The texts are the probe texts, or those the
parent put in `RESULT_DIR/texts.json` (for a trimmed vocabulary: texts it covers).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def main(out: str, result_dir: str, max_length: int = 64) -> int:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    from ..models import m3
    from ..models.probe import model_outputs, probe_batches, probe_texts
    from ..models.st_files import read_pooling

    result = Path(result_dir)
    texts = json.loads((result / "texts.json").read_text()) if (result / "texts.json").is_file() else probe_texts()
    report: dict = {}
    try:
        model, info = AutoModel.from_pretrained(out, output_loading_info=True, dtype=torch.float32)
        report["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items()}
        tokenizer = AutoTokenizer.from_pretrained(out)
        heads = None
        if m3.has_heads(out):
            try:
                heads = m3.load_heads(out, model.config.hidden_size)
            except Exception as exc:  # reported by the parent's m3-heads check; outputs without heads
                report["m3_error"] = f"{exc.__class__.__name__}: {exc}"
        outputs = model_outputs(model.eval(), probe_batches(tokenizer, texts, max_length), read_pooling(Path(out)),
                                heads=heads)
    except Exception as exc:
        report["automodel_error"] = f"{exc.__class__.__name__}: {exc}"
        report["traceback"] = traceback.format_exc(limit=3)
        outputs = {}
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(out, device="cpu")
        st.max_seq_length = max_length
        outputs["st_embedding"] = st.encode(texts, convert_to_tensor=True, batch_size=8).float().cpu()
        report["st_dimension"] = int(outputs["st_embedding"].shape[1])
    except Exception as exc:
        report["st_error"] = f"{exc.__class__.__name__}: {exc}"
    (result / "loading.json").write_text(json.dumps(report, indent=2))
    if outputs:
        save_file({k: v.contiguous() for k, v in outputs.items()}, str(result / "outputs.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4])))
