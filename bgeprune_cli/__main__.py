"""`python -m bgeprune_cli`, the form launchers take: `torchrun --nproc_per_node 8 -m bgeprune_cli train R`."""

from .cli import main

main()
