"""A model directory's tokenizer files: read and checked (files.py), trimmed and rewritten (trim.py),
sentencepiece.bpe.model through its proto (sentencepiece_model.py), and vocab_map.json (vocab_map.py).
"""
