"""`michi maturity`: each criterion of the MLOps maturity road, its verdict here and the evidence for it.

    michi maturity                        # every criterion of Google's levels 0-2 and Microsoft's 0-4
    michi maturity --framework google     # one framework
    michi maturity --unmet                # only what is not met (or unknown)
    michi maturity --json                 # one JSON object per criterion

The criteria are fixed (docs/maturity.md); verdicts and evidence come from this installation's registry, training
runs, rollouts, monitor records, labels, warehouse and traces, read without writing anything. Exits 0 whatever
the verdicts; 1 only when the database cannot be opened.
"""

from __future__ import annotations

import typer


def maturity_command(
    as_json: bool = typer.Option(False, "--json", help="one JSON object per criterion"),
    framework: str | None = typer.Option(None, "--framework", help="only google or microsoft"),
    unmet: bool = typer.Option(False, "--unmet", help="only the criteria not met (and those unknown)"),
) -> None:
    """Where this installation stands on Google's and Microsoft's MLOps levels, with the evidence for each line."""
    from michi.maturity.criteria import Framework
    from michi.maturity.records import InstallationRecords, StoresUnavailable, TrainingTriggers
    from michi.maturity.report import Verdict, assess, render_json, render_text, select_criteria
    from michi.settings import load_settings
    from services.trainer.settings import TrainerSettings

    chosen: Framework | None = None
    if framework is not None:
        try:
            chosen = Framework(framework.lower())
        except ValueError:
            typer.echo(f"michi: unknown framework {framework!r}; choose google or microsoft", err=True)
            raise typer.Exit(2) from None
    # The trainer's settings extend the shared ones: the same database, blobs and home, plus its triggers.
    settings = load_settings(TrainerSettings)
    try:
        records = InstallationRecords.open(
            settings.resolved_database_url(),
            blob_url=settings.resolved_blob_url(),
            home=settings.home,
            triggers=TrainingTriggers(settings.trainer_label_trigger, settings.trainer_schedule_s),
            model_name=settings.trainer_model_name,
        )
    except StoresUnavailable as error:
        typer.echo(f"michi: {error}", err=True)
        raise typer.Exit(1) from None
    try:
        lines = assess(records, select_criteria(chosen))
    finally:
        records.close()
    shown = [line for line in lines if line.verdict in (Verdict.NOT_MET, Verdict.UNKNOWN)] if unmet else lines
    if as_json:
        if shown:
            typer.echo(render_json(shown))
        return
    if not shown:
        typer.echo("every criterion is met or shown by CI", err=True)
        return
    typer.echo(render_text(shown, lines))
