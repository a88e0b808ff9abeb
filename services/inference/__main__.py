"""Run the inference service: `python -m services.inference` (settings from MICHI_* variables)."""

from services.inference.bootstrap import run

if __name__ == "__main__":
    run()
