"""Everything `bgeprune train` runs on: the trainer, gates and losses, data, the teacher cache,
checkpoints, distributed execution and the run directory (docs/design.md, Distillation).
"""
