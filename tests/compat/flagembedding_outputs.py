"""Run in the compat environment (transformers 4.57 + FlagEmbedding 1.4.2; docs/testing.md, "Compatibility tests").

    python flagembedding_outputs.py MODEL_DIR TEXTS_JSON OUT_JSON

Loads MODEL_DIR with `BGEM3FlagModel` on CPU in float32, encodes the texts in all three modes and
scores the first three texts against each other with `compute_score`, and writes what FlagEmbedding
returned (plus its log: whether it loaded the head files or made random ones) for the test to compare
with bgeprune. `stack_outputs.py` calls `flagembedding_outputs` for every bge-m3 export in one process.
"""

import json
import logging
import sys


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def flagembedding_outputs(model_dir: str, texts: list[str], max_length: int = 64) -> dict:
    from FlagEmbedding import BGEM3FlagModel

    logger = logging.getLogger("FlagEmbedding")
    capture = _Capture()
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        model = BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu")
        out = model.encode(texts, batch_size=4, max_length=max_length, return_dense=True, return_sparse=True,
                           return_colbert_vecs=True)
        pairs = [[q, p] for q in texts[:3] for p in texts[:3]]
        scores = model.compute_score(pairs, batch_size=4, max_query_length=max_length,
                                     max_passage_length=max_length)
    finally:
        logger.removeHandler(capture)
    return {
        "dense": out["dense_vecs"].tolist(),
        "lexical": [{k: float(v) for k, v in row.items()} for row in out["lexical_weights"]],
        "colbert": [v.tolist() for v in out["colbert_vecs"]],
        "pair_scores": {k: [float(x) for x in v] for k, v in scores.items()},
        "log": capture.messages,
    }


def main(model_dir: str, texts_path: str, out_path: str) -> None:
    with open(texts_path) as f:
        texts = json.load(f)
    with open(out_path, "w") as f:
        json.dump(flagembedding_outputs(model_dir, texts), f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
