"""Run the inference service: `python -m services.inference` (settings from MICHI_* variables)."""

from services.inference.wiring import run

if __name__ == "__main__":
    run()
