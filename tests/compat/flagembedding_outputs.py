"""Run in a *separate* environment with transformers<5 and FlagEmbedding (see README, "Compatibility tests").

    python flagembedding_outputs.py MODEL_DIR TEXTS_JSON OUT_JSON

Loads MODEL_DIR with `BGEM3FlagModel` on CPU in float32, encodes the texts in all three modes and
scores every text against every other with `compute_score`, and writes what FlagEmbedding returned
(plus whether it loaded the head files or made random ones) for the test to compare with bgeprune.
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


def main(model_dir: str, texts_path: str, out_path: str) -> None:
    capture = _Capture()
    logging.getLogger("FlagEmbedding").addHandler(capture)
    logging.getLogger("FlagEmbedding").setLevel(logging.INFO)
    from FlagEmbedding import BGEM3FlagModel

    texts = json.load(open(texts_path))
    model = BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu")
    out = model.encode(texts, batch_size=4, max_length=64, return_dense=True, return_sparse=True,
                       return_colbert_vecs=True)
    pairs = [[q, p] for q in texts[:3] for p in texts[:3]]
    scores = model.compute_score(pairs, batch_size=4, max_query_length=64, max_passage_length=64)
    json.dump({
        "dense": out["dense_vecs"].tolist(),
        "lexical": [{k: float(v) for k, v in row.items()} for row in out["lexical_weights"]],
        "colbert": [v.tolist() for v in out["colbert_vecs"]],
        "pair_scores": {k: [float(x) for x in v] for k, v in scores.items()},
        "log": capture.messages,
    }, open(out_path, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
