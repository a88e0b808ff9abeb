"""Run the warehouse sink: `python -m services.warehouse` (settings from `MICHI_*` variables)."""

from services.warehouse.wiring import run

if __name__ == "__main__":
    run()
