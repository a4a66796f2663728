"""Model directories: load them strictly, make the builtins, read and write their sentence-transformers
and bge-m3 files, encode, describe (docs/design.md, Layout of the code).
"""
