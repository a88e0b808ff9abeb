"""Run the monitor: `python -m services.monitor` (settings from `MICHI_*` variables)."""

from services.monitor.wiring import run

if __name__ == "__main__":
    run()
