"""Write an owner's next schema migration from what its models changed (Alembic autogenerate).

.venv/bin/python tools/new_migration.py trainer "trainer_run notes"

Owners: registry, ingest, annotation, trainer, monitor. The revision lands next to the owner's others
(`.../migrations/versions/v<NNNN>_<slug>.py`): read it before committing, since autogenerate takes a
rename for a drop and an add and knows nothing of data. `tests/unit/test_migrations.py` passes once
the head matches the models; `tests/integration/test_migrations.py` runs it on PostgreSQL too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from michi.migrations import environment_named, write_revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("owner", help="registry, ingest, annotation, trainer or monitor")
    parser.add_argument("message", help="what changed, e.g. 'trainer_run notes'")
    arguments = parser.parse_args(argv)
    try:
        environment = environment_named(arguments.owner)
    except LookupError as error:
        print(f"michi: {error}", file=sys.stderr)
        return 2
    written = write_revision(environment, arguments.message)
    if written is None:
        print(f"michi: the {environment.name} models match its head migration: nothing to write", file=sys.stderr)
        return 1
    # As `make format` would leave it.
    subprocess.run([sys.executable, "-m", "ruff", "check", "--fix", "--quiet", str(written)], check=False)
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(written)], check=False)
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
