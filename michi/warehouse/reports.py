"""Reports over the warehouse: how a shadow model compares with the champion on the same windows, and what each
arm of a rollout served (`rollout_arms`, shown by `michi rollouts status`).

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


@dataclass(frozen=True)
class ArmActivity:
    """What one serving arm of a rollout did on live traffic, from the warehouse: the windows it served, from how
    many devices, over how many hours of driving, and the detections it made."""

    variant: str
    model_version: str
    windows: int
    devices: int
    # Driving the arm served: per upload, its last window's end minus its first window's start, summed.
    hours: float
    # Windows whose predicted class is a harsh event, and detections (events after merging; map rules excluded).
    risky_windows: int
    detections: int

    @property
    def detections_per_hour(self) -> float | None:
        return self.detections / self.hours if self.hours > 0 else None


def rollout_arms(rollout_id: str, blob_url: str | None = None) -> list[ArmActivity]:
    """Each serving arm (variant and version) of the rollout `rollout_id`, champion first; [] before the warehouse
    holds any window of a rollout (files written before `rollout_id` existed have none)."""
    import duckdb

    rollout = rollout_id.replace("'", "''")
    risky = ", ".join(f"'{name}'" for name in RISKY_CLASSES)
    sql = f"""
        WITH served AS (
            SELECT variant, model_version, device_id, upload_id, window_started_at, window_ended_at, event_type
            FROM predictions WHERE rollout_id = '{rollout}' AND variant <> 'shadow'
        ), arms AS (
            SELECT variant, model_version, count(*) AS windows, count(DISTINCT device_id) AS devices,
                   count(*) FILTER (WHERE event_type IN ({risky})) AS risky_windows
            FROM served GROUP BY ALL
        ), uploads AS (
            SELECT variant, model_version,
                   epoch(max(window_ended_at)) - epoch(min(window_started_at)) AS seconds
            FROM served GROUP BY variant, model_version, upload_id
        ), driven AS (
            SELECT variant, model_version, sum(seconds) AS seconds FROM uploads GROUP BY ALL
        ), detected AS (
            SELECT variant, model_version, count(*) AS detections
            FROM detections WHERE rollout_id = '{rollout}' GROUP BY ALL
        )
        SELECT arms.variant, arms.model_version, windows, devices, risky_windows,
               coalesce(driven.seconds, 0) AS seconds, coalesce(detected.detections, 0) AS detections
        FROM arms LEFT JOIN driven USING (variant, model_version) LEFT JOIN detected USING (variant, model_version)
        ORDER BY arms.variant = 'champion' DESC, arms.variant, arms.model_version
    """
    try:
        rows = query(sql, blob_url)
    except duckdb.BinderException:  # no file with a rollout_id column yet
        return []
    return [
        ArmActivity(
            variant=str(row["variant"]),
            model_version=str(row["model_version"]),
            windows=int(row["windows"]),
            devices=int(row["devices"]),
            hours=float(row["seconds"] or 0.0) / 3600.0,
            risky_windows=int(row["risky_windows"]),
            detections=int(row["detections"]),
        )
        for row in rows
    ]


def describe_arm(arm: ArmActivity) -> str:
    """One line per arm, as `michi rollouts status` prints it."""
    rate = arm.detections_per_hour
    per_hour = f" ({rate:.2f}/h)" if rate is not None else ""
    return (
        f"{arm.variant} {arm.model_version}: {arm.windows:,} windows from {arm.devices:,} devices, "
        f"{arm.hours:,.1f} h driven, {arm.risky_windows:,} risky windows, {arm.detections:,} detections{per_hour}"
    )
