"""bgeprune: structured pruning of bge-m3 into drop-in Hugging Face models.

Example:
    bgeprune finalize-masks runs/smoke/train
"""

__version__ = "0.1.0"
