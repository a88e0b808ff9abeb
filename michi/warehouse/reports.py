"""Reports over the warehouse: how a shadow model compares with the champion on the same windows.

Inference scores every window with the champion and, while the rollout plan has one, with the shadow
(`variant = 'shadow'`, never scored). Joining the two on `window_id` compares them on live traffic:

    michi warehouse shadow-report                # michi-risk
    shadow_comparison("michi-risk", blob_url)    # -> list[ShadowComparison]

Only windows both scored count; a window seen again after a redelivery counts once (the views are
deduplicated by `event_id`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from michi.warehouse.query import query

RISKY_CLASSES = ("harsh_braking", "harsh_acceleration", "harsh_cornering")


@dataclass(frozen=True)
class ShadowComparison:
    champion_version: str
    shadow_version: str
    windows: int
    agreement: float
    # Windows where one calls a harsh event and the other does not, in each direction.
    shadow_only_risky: int
    champion_only_risky: int
    # (champion class, shadow class) -> windows, for the windows they disagree on.
    disagreements: dict[tuple[str, str], int] = field(default_factory=dict)


def shadow_comparison(model_name: str, blob_url: str | None = None) -> list[ShadowComparison]:
    """One comparison per (champion version, shadow version) pair seen on the same windows."""
    name = model_name.replace("'", "''")
    pairs = f"""
        WITH champion AS (
            SELECT window_id, any_value(model_version) AS version, any_value(event_type) AS class
            FROM predictions WHERE model_name = '{name}' AND variant = 'champion' GROUP BY window_id
        ), shadow AS (
            SELECT window_id, any_value(model_version) AS version, any_value(event_type) AS class
            FROM predictions WHERE model_name = '{name}' AND variant = 'shadow' GROUP BY window_id
        )
        SELECT champion.version AS champion_version, shadow.version AS shadow_version,
               champion.class AS champion_class, shadow.class AS shadow_class, count(*) AS windows
        FROM champion JOIN shadow USING (window_id)
        GROUP BY ALL
    """
    cells = query(pairs, blob_url)
    comparisons: dict[tuple[str, str], dict[tuple[str, str], int]] = {}
    for cell in cells:
        key = (str(cell["champion_version"]), str(cell["shadow_version"]))
        comparisons.setdefault(key, {})[(str(cell["champion_class"]), str(cell["shadow_class"]))] = int(cell["windows"])
    reports = []
    for (champion_version, shadow_version), counts in sorted(comparisons.items()):
        total = sum(counts.values())
        agreed = sum(windows for (left, right), windows in counts.items() if left == right)
        reports.append(
            ShadowComparison(
                champion_version=champion_version,
                shadow_version=shadow_version,
                windows=total,
                agreement=agreed / total if total else 0.0,
                shadow_only_risky=sum(
                    windows
                    for (left, right), windows in counts.items()
                    if right in RISKY_CLASSES and left not in RISKY_CLASSES
                ),
                champion_only_risky=sum(
                    windows
                    for (left, right), windows in counts.items()
                    if left in RISKY_CLASSES and right not in RISKY_CLASSES
                ),
                disagreements={pair: windows for pair, windows in counts.items() if pair[0] != pair[1]},
            )
        )
    return reports
