"""Run a bgeprune command in this process with one fault planted, for tests that kill or signal it.

    python tests/stage_harness.py MODE bgeprune-args...

MODE:
  pause-in-write      after the first file is saved into an artifact's temporary directory, sleep
                      (so a test can send SIGTERM or SIGKILL while a half-written artifact exists)
  die-between-renames SIGKILL this process right after a --force replace moved the old output aside
  none                no fault
"""

from __future__ import annotations

import os
import signal
import sys
import time


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    import safetensors.torch

    from bgeprune_cli import artifacts

    if mode == "pause-in-write":
        real_save = safetensors.torch.save_file

        def save_then_pause(tensors, filename, *rest, **kwargs):
            real_save(tensors, filename, *rest, **kwargs)
            if ".tmp-" in str(filename):
                print("PAUSED", flush=True)
                time.sleep(120)

        safetensors.torch.save_file = save_then_pause
        for module in list(sys.modules.values()):  # modules that imported save_file by name
            if getattr(module, "save_file", None) is real_save and module is not safetensors.torch:
                module.save_file = save_then_pause
    elif mode == "die-between-renames":
        real_replace = os.replace

        def replace_then_die(src, dst):
            real_replace(src, dst)
            if ".old-" in str(dst):
                os.kill(os.getpid(), signal.SIGKILL)

        artifacts.os.replace = replace_then_die
    from bgeprune_cli.cli import app

    sys.argv = ["bgeprune", *args]
    app(prog_name="bgeprune")


if __name__ == "__main__":
    # Import every stage first, so the patch above also reaches the names they imported.
    import bgeprune_cli.stages.export_hf  # noqa: F401
    import bgeprune_cli.stages.prune  # noqa: F401

    main()
