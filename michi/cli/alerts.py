"""`michi alerts`: what the platform raised on `michi.alerts.v1` (drift, retrain, and later cost and lag).

    michi alerts                      # every alert the topic holds, oldest first, one line each
    michi alerts --kind drift         # only one kind
    michi alerts --follow             # then keep printing new ones until Ctrl-C
    michi alerts --json               # one JSON object per alert (the Alert message's JSON mapping)

A line reads: time, kind, severity, model version, message, then the alert's attributes and figures
(`window_id=... features=...`), so an alert names its evidence. Text from the topic is printed with
control characters escaped: an alert cannot rewrite the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from google.protobuf.json_format import MessageToDict

from michi.bus.catalog import ALERTS
from michi.bus.connection import KafkaConnection
from michi.bus.reader import Record, TopicReader
from michi.contracts.v1 import operations_pb2


def printable(text: str) -> str:
    """`text` with control characters (escape sequences, newlines) shown as escapes."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def alert_line(alert: operations_pb2.Alert) -> str:
    """One alert as one line: time, kind, severity, model version, message, evidence."""
    when = alert.occurred_at.ToDatetime().isoformat(timespec="seconds") + "Z" if alert.HasField("occurred_at") else "-"
    severity = operations_pb2.AlertSeverity.Name(alert.severity).removeprefix("ALERT_SEVERITY_")
    version = alert.lineage.model_version or "-"
    evidence = [f"{key}={alert.attributes[key]}" for key in sorted(alert.attributes)]
    evidence += [f"{key}={alert.figures[key]:.4g}" for key in sorted(alert.figures)]
    fields = [when, alert.kind or "-", severity, version, alert.message, " ".join(evidence)]
    return printable("  ".join(field for field in fields if field))


def alert_json(alert: operations_pb2.Alert) -> str:
    return json.dumps(MessageToDict(alert, preserving_proto_field_name=True), sort_keys=True)


def show_alerts(
    connection: KafkaConnection,
    prefix: str,
    *,
    kind: str | None,
    follow: bool,
    as_json: bool,
    echo: Callable[[str], None],
    note: Callable[[str], None] = lambda line: None,
    timeout: float = 30.0,
) -> int:
    """Print the alerts on the topic (then, with `follow`, new ones until interrupted); how many were printed.

    `note` gets a line for people (standard error in the CLI) when following starts: everything before it
    was printed, and every alert raised after it will be.
    """
    printed = 0

    def show(records: Iterable[Record]) -> None:
        nonlocal printed
        for record in records:
            alert = record.message
            assert isinstance(alert, operations_pb2.Alert)
            if kind is not None and alert.kind != kind:
                continue
            echo(alert_json(alert) if as_json else alert_line(alert))
            printed += 1

    with TopicReader(connection, ALERTS, prefix) as reader:
        show(reader.read_to_end(timeout))
        if follow:
            note(f"following {ALERTS.name(prefix)} (Ctrl-C stops)")
        while follow:
            show(reader.poll(1.0))
    return printed
