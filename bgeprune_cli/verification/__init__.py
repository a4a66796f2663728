"""What `bgeprune verify` checks, one module per check or family; `stages/verify.py` lists them, their
order and the verdict.

  static_checks.py   files, manifest, finite, config-shapes, identity, serving-config, m3-heads
  lineage.py         where the export came from: lineage.json, the run's masks, vocab_map.json
  tokenizer_check.py a trimmed vocabulary's tokenizer files
  strict_load.py     AutoModel and SentenceTransformer in a fresh process (fresh_load.py is that process)
  masked_parity.py   provenance and parity against the masked model
  onnx_checks.py     the graphs in onnx/
  reference.py       agreement with a reference model (--compare)
"""

PROBE_MAX_LENGTH = 64  # tokens of each probe text, in every check that encodes
