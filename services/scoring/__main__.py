"""Run the scoring service: `python -m services.scoring` (settings from `MICHI_*` variables)."""

from services.scoring.wiring import run

if __name__ == "__main__":
    run()
