"""Run the rollout controller: `python -m services.rollouts` (settings from `MICHI_*` variables)."""

from services.rollouts.wiring import run

if __name__ == "__main__":
    run()
