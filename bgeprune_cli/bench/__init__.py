"""What `bgeprune bench` measures and shows: speed, memory, size, quality, agreement (docs/design.md,
Stages and artifacts).
"""
