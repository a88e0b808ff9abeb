"""Run the annotation service: `python -m services.annotation` (or `michi run annotation`).

Settings come from `MICHI_*` variables; the page and API listen on `MICHI_ANNOTATION_PORT` (default 8081).
"""

from services.annotation.wiring import run

if __name__ == "__main__":
    run()
