"""Run the trainer service: `python -m services.trainer` (settings from MICHI_* variables; or `michi run trainer`)."""

from services.trainer.wiring import run

if __name__ == "__main__":
    run()
