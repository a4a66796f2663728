"""Every file name that artifacts and model directories hold, in one place (docs/design.md, Artifacts).

A model directory (a base, an export) follows Hugging Face, sentence-transformers and FlagEmbedding:
`config.json`, `model.safetensors`, the tokenizer files, `modules.json` and its folders, and for
bge-m3 `colbert_linear.pt` and `sparse_linear.pt`. bgeprune's own artifacts add the files below.

Example:
    python -c "from bgeprune_cli import filenames; print(filenames.WEIGHTS)"
"""

MANIFEST = "manifest.json"  # every artifact

# ---- model directories (bases, exports, and the pruned-model artifact)
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"
COLBERT_HEAD = "colbert_linear.pt"  # bge-m3's heads, as FlagEmbedding reads them
SPARSE_HEAD = "sparse_linear.pt"
HEAD_FILES = (COLBERT_HEAD, SPARSE_HEAD)
# Tokenizer files copied byte-for-byte into exports (whichever the base has).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model",
                   "spiece.model", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json")
FAST_TOKENIZER = "tokenizer.json"
# The files a tokenizer's vocabulary comes from: the fast one, or one of a slow one's; a model has at least one.
TOKENIZER_VOCABULARY_FILES = (FAST_TOKENIZER, "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json")
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
SPM_MODEL = "sentencepiece.bpe.model"  # XLM-R's slow tokenizer (fairseq ids: spm id + 1)
VOCAB_TXT = "vocab.txt"  # BERT's slow tokenizer
ADDED_TOKENS = "added_tokens.json"
MODULES = "modules.json"  # sentence-transformers
ST_CONFIG = "sentence_bert_config.json"
ST_MODEL_CONFIG = "config_sentence_transformers.json"
MODEL_CARD = "README.md"
LINEAGE = "lineage.json"  # an export's record of the artifacts it came from and the layout it kept
VOCAB_MAP = "vocab_map.json"  # a trimmed export's new token id -> the base's id

# ---- ONNX inside an export (`export-hf --onnx`, `export-onnx`), under the names the clients read:
# text-embeddings-inference loads `model.onnx` or `onnx/model.onnx` and fetches `onnx/model.onnx_data`;
# sentence-transformers (backend="onnx") loads `onnx/model.onnx` and names int8 files `model_qint8_<arch>.onnx`.
ONNX_DIR = "onnx"
ONNX_MODEL = "model.onnx"  # fp32: last_hidden_state (+ dense_vecs, sparse_vecs, colbert_vecs for bge-m3)
ONNX_DATA = "model.onnx_data"  # its weights, when the graph is over protobuf's 2 GB limit
ONNX_INT8 = "model_qint8_avx512_vnni.onnx"  # dynamic int8, the same outputs

# ---- train-run (RUN/train) and checkpoints (RUN/checkpoints/step-N)
GATES = "gates.safetensors"  # log_alpha (or magnitude scores) per mask type
STUDENT = "student.safetensors"  # the unpruned-shape student weights
LAGRANGIAN = "lagrangian.safetensors"
RECOVERY_MASKS = "recovery_masks.safetensors"  # the fixed masks the recovery phase used
M3_HEADS = "m3_heads.safetensors"  # bge-m3 heads inside bgeprune artifacts (train-run, pruned-model)
METRICS = "metrics.jsonl"
CHECKPOINT_STATE = "state.pt"  # optimizer, scheduler, RNG and data position (read with weights_only=True)

# ---- masks (RUN/masks)
MASKS = "masks.safetensors"
MASKS_SUMMARY = "masks.json"
VOCAB_SAMPLE = "vocab_sample.json"  # texts of the trimming corpus that verify tokenizes (the kept ids: the Layout)

# ---- reports
REPORT = "report.json"
REPORT_PNG = "report.png"
