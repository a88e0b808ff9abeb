"""Run the trainer service: `python -m services.trainer` (settings from MICHI_* variables; or `michi run trainer`)."""

import sys

from services.trainer.spec import SPEC

# Without the `training` extra (torch) one line says what to install, before an import fails with a traceback.
missing = SPEC.missing_extra()
if missing is not None:
    sys.exit(f"michi: {missing}")

from services.trainer.wiring import run  # noqa: E402 (after the check above)

if __name__ == "__main__":
    run()
