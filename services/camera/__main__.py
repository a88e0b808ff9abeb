"""Run the camera service: `python -m services.camera` (settings from `MICHI_*` variables)."""

from services.camera.wiring import run

if __name__ == "__main__":
    run()
