"""The mask math and the Layout of kept units, masks applied through hooks, slicing HF-named tensors,
and the models behind an artifact (docs/design.md, Masks).
"""
