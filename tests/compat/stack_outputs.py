"""Run in the compat environment (`.ci/compat-env`: transformers 4.57, sentence-transformers 5.7,
FlagEmbedding 1.4.2), once for all exports, by tests/test_compat.py:

    python stack_outputs.py JOB_JSON OUT_DIR

JOB_JSON is {"texts": [...], "max_length": 64, "exports": {NAME: {"dir": DIR, "m3": true|false}}}.
For every export this loads DIR the way a user of the older stack would and writes what came back:

- `AutoModel.from_pretrained(DIR, output_loading_info=True)`: the loading info (missing, unexpected,
  mismatched keys, error messages) and the model class;
- `AutoTokenizer.from_pretrained(DIR)`: the input ids of the texts (truncated to max_length), and the
  same from the slow tokenizer (`use_fast=False`: sentencepiece.bpe.model or vocab.txt);
- the model's `last_hidden_state` for the texts as one padded batch, and its attention mask;
- `SentenceTransformer(DIR).encode(texts)`;
- for bge-m3 exports, `BGEM3FlagModel`'s three outputs and `compute_score` (flagembedding_outputs.py).

OUT_DIR/results.json holds {"versions": {...}, "exports": {NAME: {...}}}; the tensors go to
OUT_DIR/NAME.safetensors (`last_hidden_state`, `attention_mask`, `sentence_embeddings`). A check that
raises is recorded as its traceback under "errors" and the others still run, so one broken file does not
hide what else works.
"""

import json
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local directories only: never the hub

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flagembedding_outputs import flagembedding_outputs  # noqa: E402


def _versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "sentence-transformers", "FlagEmbedding",
                                             "tokenizers", "safetensors", "huggingface-hub")}


def _loading_info(info: dict) -> dict:
    return {key: sorted(str(item) for item in value) for key, value in info.items()}


@torch.no_grad()
def export_outputs(directory: str, texts: list[str], max_length: int, m3: bool, tensors: dict) -> dict:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    result: dict = {"errors": {}}

    def checked(name, fn):
        try:
            fn()
        except Exception:
            result["errors"][name] = traceback.format_exc()

    def automodel():
        model, info = AutoModel.from_pretrained(directory, output_loading_info=True)
        result["model_class"] = type(model).__name__
        result["loading_info"] = _loading_info(info)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        tensors["last_hidden_state"] = model.eval()(**batch).last_hidden_state.contiguous()
        tensors["attention_mask"] = batch["attention_mask"].contiguous()

    def tokenizer_ids():
        tokenizer = AutoTokenizer.from_pretrained(directory)
        result["tokenizer_class"] = type(tokenizer).__name__
        result["input_ids"] = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    def slow_tokenizer_ids():
        tokenizer = AutoTokenizer.from_pretrained(directory, use_fast=False)
        result["slow_tokenizer_class"] = type(tokenizer).__name__
        result["slow_input_ids"] = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    def sentence_transformer():
        model = SentenceTransformer(directory, device="cpu")
        result["sentence_transformer"] = repr(model)
        tensors["sentence_embeddings"] = model.encode(texts, batch_size=16, convert_to_tensor=True).cpu().contiguous()

    def flagembedding():
        result["flagembedding"] = flagembedding_outputs(directory, texts, max_length)

    checked("automodel", automodel)
    checked("tokenizer", tokenizer_ids)
    checked("slow_tokenizer", slow_tokenizer_ids)
    checked("sentence_transformer", sentence_transformer)
    if m3:
        checked("flagembedding", flagembedding)
    return result


def main(job_path: str, out_dir: str) -> None:
    job = json.loads(Path(job_path).read_text())
    out = Path(out_dir)
    results = {"versions": _versions(), "exports": {}}
    for name, export in job["exports"].items():
        tensors: dict = {}
        results["exports"][name] = export_outputs(export["dir"], job["texts"], job["max_length"], export["m3"],
                                                  tensors)
        save_file(tensors, str(out / f"{name}.safetensors"))
    (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
