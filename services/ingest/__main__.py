"""Run the ingest service: `python -m services.ingest` (settings from `MICHI_*` variables)."""

from services.ingest.wiring import run

if __name__ == "__main__":
    run()
