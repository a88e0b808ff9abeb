"""The monitor page: `GET /` (one HTML file, `page.html`, whose inline script draws inline SVG charts) and the JSON
it reads under `/v1/monitor/`, served by the monitor beside /healthz, /readyz and /metrics on `MICHI_MONITOR_PORT`
(8083; `michi.readiness.serve_operations(pages=...)`, wired by `services/monitor/wiring.py`). Open
http://127.0.0.1:8083/ while `michi up` runs.

    GET /v1/monitor/windows?model_version=&cohort=&limit=   the closed windows of one series (default: the newest
                                                             version, cohort "all"), PSI per feature, oldest first
    GET /v1/monitor/windows/<window_id>                      one window: every figure, the histograms, its episodes
    GET /v1/monitor/episodes?limit=                          drift episodes, newest first
    GET /v1/monitor/episodes/<episode_id>                    one episode
    GET /v1/monitor/error-rate?model_version=                ADWIN's error-rate estimate replayed over the version's
                                                             random-QA outcomes (at most 500 points), its changes
    GET /v1/monitor/resources                                the resource watch's last rounds and the day's figures
    GET /v1/monitor/rollouts?limit=                          running and paused rollouts, then the newest ended:
                                                             arms, shares, each arm's agreement with random-QA
                                                             labels and drift, decisions with the share over time

Each view (`windows_view`, `window_view`, `episodes_view`, `episode_view`, `error_rate_view`, `resources_view`,
`rollouts_view`) is a function of the store (and the resource watch, the model registry) returning a JSON-ready
dict; `monitor_pages` puts them behind `PageAccess`:

- with `MICHI_MONITOR_PAGE_TOKEN` set, every page needs it: `Authorization: Bearer <token>`, or `?token=<token>`
  (the page keeps a token given that way in the tab's sessionStorage, takes it out of the address and sends it
  as the header), compared in constant time; without it the answer is 401 with a JSON reason (a browser asking
  for `/` gets the page's own code with the 401, which holds no data and asks for the token);
- without a token they are open in `MICHI_ENV=dev` or when the monitor listens on loopback only, and answer 403
  otherwise (the model's and the fleet's figures are not for anyone who can reach the port); open, they still
  answer 403 to a request whose `Host` is a name other than `localhost`, the monitor's host or the page URL's
  (a web page elsewhere rebinding its own name to 127.0.0.1 cannot read them); /healthz, /readyz and /metrics
  are never affected.

Query strings are bounded (`michi.readiness.MAX_PAGE_TARGET`), texts by the columns they are compared with, and
`limit` to `MAX_LIMIT`. Everything shown comes from devices and topics; the page writes it as text only, and its
Content-Security-Policy allows its own inline script and style (by hash) and nothing else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from michi.readiness import PageAnswer, PageHandler, PageRequest, json_answer
from michi.registry import ModelRegistry
from michi.registry.records import Rollout, RolloutDecision
from michi.registry.rollout_status import RolloutAction
from michi.warehouse.rows import variant_name
from services.monitor.adapters.store import MonitorStore
from services.monitor.adapters.tables import MonitorDriftEpisodeRow, MonitorWindowRow
from services.monitor.adapters.version_figures import version_period_figures
from services.monitor.domain.adwin import Adwin
from services.monitor.domain.windows import COHORT_ALL
from services.monitor.resources import ResourcePolicy, ResourceWatch
from services.monitor.settings import MonitorSettings

API = "/v1/monitor/"
# Windows of the drift chart by default, and the most any list answers.
DEFAULT_WINDOWS = 200
DEFAULT_EPISODES = 100
# Rollouts the rollouts section shows by default (running and paused ones first, then the newest ended).
DEFAULT_ROLLOUTS = 10
MAX_LIMIT = 1000
# Points of the error-rate chart at most (every change found among them).
MAX_ERROR_POINTS = 500
# Features the drift chart shows by default when none drifted lately: the highest PSI of the newest window.
TOP_FEATURES = 3
# The longest texts a query may carry: the columns they are compared with (`adapters/tables.py`).
MAX_TEXT = {"model_name": 128, "model_version": 128, "cohort": 160, "window_id": 64, "episode_id": 64}
JSON_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
TOKEN_MISSING = "this page needs the monitor's page token: Authorization: Bearer <token>, or ?token=<token> once"
TOKEN_WRONG = "the page token given is not the monitor's"
TOKEN_UNSET = (
    "set MICHI_MONITOR_PAGE_TOKEN: outside MICHI_ENV=dev the monitor page is served on an address other than "
    "loopback only with a token"
)
HOST_REFUSED = (
    "without MICHI_MONITOR_PAGE_TOKEN the monitor page answers only requests to localhost, an IP address, "
    "MICHI_MONITOR_HOST or the host of MICHI_MONITOR_PAGE_URL"
)


class BadQuery(ValueError):
    """A query parameter the views cannot take (400, with this reason)."""


@dataclass(frozen=True)
class PageSources:
    """What the page reads: the monitor's store, its resource watch (None when it does not run), and the settings
    its charts draw as lines (PSI threshold, ADWIN's δ)."""

    store: MonitorStore
    watch: ResourceWatch | None
    psi_threshold: float
    adwin_delta: float
    # The model registry (its rollouts and their decisions), None where the monitor has none.
    registry: ModelRegistry | None = None


# --- the views: JSON-ready dicts


def _seconds(moment: datetime | None) -> float | None:
    """Unix seconds of a stored time (SQLite gives it back without a zone: it was written in UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp(), 3)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _window_summary(row: MonitorWindowRow) -> dict[str, Any]:
    return {
        "window_id": row.window_id,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "cohort": row.cohort,
        "closed_at": _seconds(row.closed_at),
        "latest_s": row.latest_s,
        "rows": row.rows,
        "reason": row.reason,
        "verdict": row.verdict,
        "drifted": list(row.drifted),
        "profile_version": row.profile_version,
    }


def _episode(row: MonitorDriftEpisodeRow) -> dict[str, Any]:
    return {
        "episode_id": row.episode_id,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "cohort": row.cohort,
        "status": row.status,
        # Whether it alerted: an episode whose drift did not last the sustain windows ended without a word.
        "alerted": bool(row.firing_event_id),
        "windows": list(row.windows),
        "features": list(row.features),
        "samples": row.samples,
        "firing_event_id": row.firing_event_id,
        "resolved_event_id": row.resolved_event_id,
        "retrain_event_id": row.retrain_event_id,
        "resolved_window_id": row.resolved_window_id,
        "opened_at": _seconds(row.opened_at),
        "resolved_at": _seconds(row.resolved_at),
    }


def default_features(windows: Sequence[Mapping[str, Any]], top: int = TOP_FEATURES) -> list[str]:
    """The features the drift chart shows first: those that drifted in the latest window where any did, else the
    `top` highest PSI of the newest window with figures (`windows` oldest first, as `windows_view` gives them)."""
    for window in reversed(windows):
        if window["drifted"]:
            return sorted(window["drifted"])
    for window in reversed(windows):
        figures = [(psi, feature) for feature, psi in window["psi"].items() if psi is not None]
        if figures:
            return [feature for _, feature in sorted(figures, key=lambda item: (-item[0], item[1]))[:top]]
    return []


def windows_view(
    store: MonitorStore,
    *,
    psi_threshold: float,
    model_version: str | None = None,
    cohort: str | None = None,
    limit: int = DEFAULT_WINDOWS,
) -> dict[str, Any]:
    """The closed windows of one (version, cohort), oldest first, with each feature's PSI: the drift chart.

    Default version: the one whose window closed last; default cohort: "all". `series` lists every (model,
    version, cohort) with windows kept, for choosing another.
    """
    series = store.window_series()
    version = model_version if model_version is not None else (series[0].model_version if series else None)
    chosen = cohort if cohort is not None else COHORT_ALL
    model_name = next(
        (item.model_name for item in series if item.model_version == version and item.cohort == chosen), None
    )
    rows = [] if version is None else store.windows(model_version=version, cohort=chosen, limit=limit)
    windows = []
    features: set[str] = set()
    for row in reversed(rows):
        psi = {feature: _number(figures.get("psi")) for feature, figures in row.figures.items()}
        features.update(psi)
        performance = row.performance or {}
        windows.append(
            {
                **_window_summary(row),
                "psi": psi,
                # Expected from the model's confidences (`domain/performance.py`); None before it was computed.
                "expected_accuracy": _number(performance.get("expected_accuracy")),
                "expected_false_alert_rate": _number(performance.get("expected_false_alert_rate")),
            }
        )
    return {
        "model_name": model_name,
        "model_version": version,
        "cohort": chosen,
        "psi_threshold": psi_threshold,
        "series": [
            {
                "model_name": item.model_name,
                "model_version": item.model_version,
                "cohort": item.cohort,
                "windows": item.windows,
                "last_closed_at": _seconds(item.last_closed_at),
            }
            for item in series
        ],
        "features": sorted(features),
        "default_features": default_features(windows),
        "windows": windows,
    }


def window_view(store: MonitorStore, window_id: str, *, psi_threshold: float) -> dict[str, Any] | None:
    """One closed window: every feature's figures and histogram (edges, reference and current shares), and the
    drift episodes it opened, continued or resolved; None when it is not kept (unknown, or pruned)."""
    row = store.window(window_id)
    if row is None:
        return None
    return {
        **_window_summary(row),
        "psi_threshold": psi_threshold,
        "figures": row.figures,
        "episodes": [_episode(episode) for episode in store.episodes_of_window(row)],
    }


def episodes_view(store: MonitorStore, *, limit: int = DEFAULT_EPISODES) -> dict[str, Any]:
    """The latest drift episodes, newest first."""
    return {"episodes": [_episode(row) for row in store.episodes(limit=limit)]}


def episode_view(store: MonitorStore, episode_id: str) -> dict[str, Any] | None:
    row = store.episode(episode_id)
    return None if row is None else _episode(row)


def _spread(count: int, keep: Sequence[int], max_points: int) -> list[int]:
    """At most `max_points` indices of `count`: every one in `keep` (the first `max_points` // 2), the last, and
    an even spread of the rest."""
    if count <= max_points:
        return list(range(count))
    forced = set(sorted(keep)[: max_points // 2]) | {count - 1}
    budget = max(1, max_points - len(forced))
    stride = math.ceil(count / budget)
    return sorted(forced | set(range(0, count, stride)))


def error_rate_view(
    store: MonitorStore,
    *,
    delta: float,
    model_name: str | None = None,
    model_version: str | None = None,
    max_points: int = MAX_ERROR_POINTS,
) -> dict[str, Any]:
    """ADWIN's estimate of a model version's error rate after each random-QA outcome, replayed as the monitor fed
    them (the same detector and δ, so the same estimates and changes), at most `max_points` points with every
    change found among them; the changes the monitor kept (`monitor_concept_drift`).

    Default version: the one whose latest outcome was predicted last.
    """
    series = store.outcome_series()
    chosen = next(
        (
            item
            for item in series
            if (model_version is None or item.model_version == model_version)
            and (model_name is None or item.model_name == model_name)
        ),
        None,
    )
    view: dict[str, Any] = {
        "model_name": chosen.model_name if chosen else model_name,
        "model_version": chosen.model_version if chosen else model_version,
        "delta": delta,
        "series": [
            {
                "model_name": item.model_name,
                "model_version": item.model_version,
                "labels": item.outcomes,
                "last_predicted_at_s": item.last_predicted_at_s,
            }
            for item in series
        ],
        "labels": 0,
        "errors": 0,
        "points": [],
        "detected": [],
        "changes": [],
    }
    if chosen is None:
        return view
    outcomes = store.outcomes_of(chosen.model_name, chosen.model_version)
    detector = Adwin(delta=delta)
    estimates: list[tuple[float, int]] = []
    detected: list[int] = []
    for index, outcome in enumerate(outcomes):
        if detector.update(0.0 if outcome.correct else 1.0):
            detected.append(index)
        estimates.append((detector.estimation, detector.width))
    view["labels"] = len(outcomes)
    view["errors"] = sum(1 for outcome in outcomes if not outcome.correct)
    view["detected"] = [outcomes[index].sequence for index in detected]
    view["points"] = [
        {
            "label": outcomes[index].sequence,
            "error_rate": round(estimates[index][0], 6),
            "width": estimates[index][1],
            "at": outcomes[index].predicted_at_s,
        }
        for index in _spread(len(outcomes), detected, max_points)
    ]
    view["changes"] = [
        {
            "event_id": row.event_id,
            "label": row.sequence,
            "error_rate_before": row.error_rate_before,
            "error_rate_after": row.error_rate_after,
            "direction": "worse" if row.error_rate_after > row.error_rate_before else "better",
            "retrain_event_id": row.retrain_event_id,
            "detected_at": _seconds(row.detected_at),
        }
        for row in store.concept_drifts_of(chosen.model_name, chosen.model_version)
    ]
    return view


# What each action leaves on the candidate (percent of devices); None: as before.
_ENDED_SHARE = {RolloutAction.PROMOTE.value: 100.0, RolloutAction.ROLLBACK.value: 0.0, RolloutAction.ABORT.value: 0.0}


def _candidate_percent(decision: RolloutDecision) -> float | None:
    """The candidate's share of devices (percent) after `decision`, None when the decision did not change it."""
    if decision.action in _ENDED_SHARE:
        return _ENDED_SHARE[decision.action]
    weight = decision.evidence.get("weight_percent")
    if isinstance(weight, Mapping):
        weight = weight.get("to")
    return _number(weight)


def _decision(decision: RolloutDecision) -> dict[str, Any]:
    return {
        "revision": decision.revision,
        "action": decision.action,
        "actor": decision.actor,
        "reason": decision.reason,
        "at": _seconds(decision.created_at),
        "candidate_percent": _candidate_percent(decision),
        "evidence": decision.evidence,
    }


def _arms(registry: ModelRegistry, rollout: Rollout) -> list[dict[str, Any]]:
    """The arms of `rollout`: what the current plan serves while it runs, its versions once it ended."""
    if rollout.ended_at is None:
        plan = registry.current_plan(rollout.model_name)
        if plan.rollout_id == rollout.rollout_id:
            return [
                {
                    "model_version": arm.model.version,
                    "variant": variant_name(arm.variant),
                    "share": round(float(arm.traffic_share), 6),
                }
                for arm in plan.arms
            ]
    # Ended: the champion and every candidate (a bandit may have up to three), with their last shares.
    return [
        {
            "model_version": rollout.champion_version,
            "variant": "champion",
            "share": round(rollout.champion_percent / 100.0, 6),
        },
        *(
            {"model_version": version, "variant": "candidate", "share": round(percent / 100.0, 6)}
            for version, percent in rollout.weights
        ),
    ]


def rollouts_view(
    registry: ModelRegistry | None,
    store: MonitorStore,
    *,
    limit: int = DEFAULT_ROLLOUTS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The rollouts section: the running and paused rollouts, then the newest ended ones (at most `limit` in all),
    each with its arms and shares, what the monitor saw of each arm's version during the rollout (random-QA
    agreement with its Wilson interval, drift windows, expected accuracy) and its decisions, oldest first, with
    the candidate's share after each (the share over time).

    `registry` None, or a database without the registry's tables: no rollouts, and `registry` says why.
    """
    if registry is None:
        return {"registry": "the monitor reads no model registry", "rollouts": []}
    moment = now or datetime.now(UTC)
    try:
        names = sorted({version.name for version in registry.list()})
        every = [rollout for name in names for rollout in registry.rollouts(name)]
        every.sort(key=lambda rollout: (rollout.ended_at is not None, -rollout.started_at.timestamp()))
        chosen = every[:limit]
        histories = {name: registry.rollout_history(name) for name in {rollout.model_name for rollout in chosen}}
        rollouts = []
        for rollout in chosen:
            until = rollout.ended_at or moment
            arms = _arms(registry, rollout)
            for arm in arms:
                figures = version_period_figures(
                    store.engine, rollout.model_name, arm["model_version"], rollout.started_at, until
                )
                interval = figures.agreement_interval()
                arm.update(
                    {
                        "labelled": figures.labelled,
                        "agreed": figures.agreed,
                        "agreement": figures.agreement,
                        "agreement_interval": list(interval) if interval else None,
                        "windows": figures.windows,
                        "drifting_windows": figures.drifting_windows,
                        "rows": figures.rows,
                        "expected_accuracy": figures.expected_accuracy,
                        "last_verdict": figures.last_verdict,
                    }
                )
            decisions = [
                _decision(decision)
                for decision in reversed(histories[rollout.model_name])
                if decision.rollout_id == rollout.rollout_id
            ]
            rollouts.append(
                {
                    "rollout_id": rollout.rollout_id,
                    "model_name": rollout.model_name,
                    "strategy": rollout.strategy,
                    "status": rollout.status,
                    "candidate_version": rollout.candidate_version,
                    "candidates": list(rollout.candidates),
                    "champion_version": rollout.champion_version,
                    "weight_percent": rollout.weight_percent,
                    "step_index": rollout.step_index,
                    "steps": rollout.steps,
                    "started_by": rollout.started_by,
                    "started_at": _seconds(rollout.started_at),
                    "ended_at": _seconds(rollout.ended_at),
                    "arms": arms,
                    "decisions": decisions,
                }
            )
    except SQLAlchemyError:
        return {"registry": "the registry's tables are not in the monitor's database", "rollouts": []}
    return {"registry": None, "now": _seconds(moment), "rollouts": rollouts}


def resources_view(watch: ResourceWatch | None, policy: ResourcePolicy | None = None) -> dict[str, Any]:
    """The resource watch's last rounds as columns (one entry per round; null where a service or group was not
    observed), its thresholds and the day's figures at the last round."""
    if watch is None:
        return {"watching": False}
    policy = policy or watch.policy
    rounds = watch.history()
    services = sorted({service for round_ in rounds for service in round_.memory})
    groups = sorted({group for round_ in rounds for group in round_.lag})
    return {
        "watching": True,
        "memory_threshold": policy.memory_headroom_ratio,
        "lag_records_threshold": policy.lag_records,
        "lag_age_threshold_s": policy.lag_age_s,
        "daily_budget_usd": policy.daily_budget,
        "at": [round_.at for round_ in rounds],
        "day": [round_.day for round_ in rounds],
        "cost_usd": [_number(round_.cost_usd) for round_ in rounds],
        "memory": {service: [_number(round_.memory.get(service)) for round_ in rounds] for service in services},
        "lag_records": {
            group: [round_.lag[group][0] if group in round_.lag else None for round_ in rounds] for group in groups
        },
        "lag_age_s": {
            group: [_number(round_.lag[group][1]) if group in round_.lag else None for round_ in rounds]
            for group in groups
        },
        "today": {name: value if isinstance(value, str) else _number(value) for name, value in watch.today().items()},
    }


# --- who may see it


def is_loopback(host: str) -> bool:
    """Whether the monitor listening on `host` is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str | None) -> str:
    """The name of a `Host` header, lower-case, without port or IPv6 brackets."""
    try:
        return (urlsplit("//" + (host_header or "").strip()).hostname or "").lower()
    except ValueError:
        return ""


class PageAccess:
    """Who may read the page and its JSON (module docstring): the token when one is set, else dev or loopback,
    asked by a host name of this monitor's."""

    def __init__(
        self, token: str | None, *, open_without_token: bool, host_names: frozenset[str] = frozenset()
    ) -> None:
        self._token = token.encode() if token else None
        self.open_without_token = open_without_token
        self.host_names = frozenset(name.lower() for name in host_names if name) | {"localhost"}

    @classmethod
    def of(cls, settings: MonitorSettings) -> PageAccess:
        token = settings.monitor_page_token.get_secret_value() if settings.monitor_page_token is not None else None
        names = {settings.monitor_host, urlsplit(settings.monitor_page_url).hostname or ""}
        return cls(
            token,
            open_without_token=settings.env == "dev" or is_loopback(settings.monitor_host),
            host_names=frozenset(names),
        )

    def host_allowed(self, request: PageRequest) -> bool:
        """Whether `request` names this monitor: an IP address, localhost, or one of `host_names` (a page
        elsewhere that rebinds its own name to this address sends that name)."""
        name = _host_name(request.header("host"))
        if name in self.host_names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def refusal(self, request: PageRequest, *, page: bool = False) -> PageAnswer | None:
        """None when `request` may read; else the answer (401, or 403 when no token is set and none may)."""
        if self._token is None:
            if not self.open_without_token:
                return json_answer(403, {"status": "forbidden", "reason": TOKEN_UNSET}, JSON_HEADERS)
            if not self.host_allowed(request):
                return json_answer(403, {"status": "forbidden", "reason": HOST_REFUSED}, JSON_HEADERS)
            return None
        given = _bearer(request.header("authorization")) or request.parameter("token")
        if given and hmac.compare_digest(given.encode(), self._token):
            return None
        headers = {**JSON_HEADERS, "WWW-Authenticate": 'Bearer realm="michi-monitor"'}
        if page and "text/html" in (request.header("accept") or ""):
            # A browser: the page's code (no data in it), which asks for the token and sends it as the header.
            return _page_answer(401, headers)
        return json_answer(401, {"status": "unauthorized", "reason": TOKEN_WRONG if given else TOKEN_MISSING}, headers)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


# --- the page and the routes


def _hashes(blocks: Sequence[str]) -> str:
    if not blocks:
        return "'none'"
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'" for block in blocks
    )


@functools.cache
def page_html() -> tuple[bytes, str]:
    """The page (`page.html`) and its Content-Security-Policy: its inline script and style by hash, nothing else
    (no inline event handlers, no style attributes, no images, no other origin)."""
    text = resources.files("services.monitor.entrypoints").joinpath("page.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", text, flags=re.DOTALL)
    policy = (
        f"default-src 'none'; script-src {_hashes(scripts)}; style-src {_hashes(styles)}; img-src 'none'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return text.encode(), policy


def _page_answer(status: int = 200, headers: Mapping[str, str] | None = None) -> PageAnswer:
    body, policy = page_html()
    return PageAnswer(
        status,
        body,
        "text/html; charset=utf-8",
        {**JSON_HEADERS, **(headers or {}), "Content-Security-Policy": policy},
    )


def _text(request: PageRequest, name: str) -> str | None:
    value = request.parameter(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT[name]:
        raise BadQuery(f"{name} is longer than {MAX_TEXT[name]} characters")
    return value


def _limit(request: PageRequest, default: int) -> int:
    value = request.parameter("limit")
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except ValueError:
        raise BadQuery("limit must be a whole number") from None
    return max(1, min(limit, MAX_LIMIT))


def _identifier(name: str, value: str) -> str:
    if not value or len(value) > MAX_TEXT[name] or "/" in value:
        raise BadQuery(f"{name} must be 1 to {MAX_TEXT[name]} characters without '/'")
    return value


def _not_found(what: str) -> PageAnswer:
    return json_answer(404, {"status": "not found", "reason": f"no {what} kept with that id"}, JSON_HEADERS)


def answer_api(sources: PageSources, request: PageRequest) -> PageAnswer:
    """The JSON of `/v1/monitor/<view>` (module docstring), access already granted."""
    route = request.path.removeprefix(API)
    try:
        if route == "windows":
            body: dict[str, Any] | None = windows_view(
                sources.store,
                psi_threshold=sources.psi_threshold,
                model_version=_text(request, "model_version"),
                cohort=_text(request, "cohort"),
                limit=_limit(request, DEFAULT_WINDOWS),
            )
        elif route.startswith("windows/"):
            window_id = _identifier("window_id", route.removeprefix("windows/"))
            body = window_view(sources.store, window_id, psi_threshold=sources.psi_threshold)
            if body is None:
                return _not_found("window")
        elif route == "episodes":
            body = episodes_view(sources.store, limit=_limit(request, DEFAULT_EPISODES))
        elif route.startswith("episodes/"):
            body = episode_view(sources.store, _identifier("episode_id", route.removeprefix("episodes/")))
            if body is None:
                return _not_found("episode")
        elif route == "error-rate":
            body = error_rate_view(
                sources.store,
                delta=sources.adwin_delta,
                model_name=_text(request, "model_name"),
                model_version=_text(request, "model_version"),
            )
        elif route == "resources":
            body = resources_view(sources.watch)
        elif route == "rollouts":
            body = rollouts_view(sources.registry, sources.store, limit=_limit(request, DEFAULT_ROLLOUTS))
        else:
            return json_answer(404, {"status": "not found"}, JSON_HEADERS)
    except BadQuery as error:
        return json_answer(400, {"status": "bad request", "reason": str(error)}, JSON_HEADERS)
    return json_answer(200, body, JSON_HEADERS)


def monitor_pages(sources: PageSources, access: PageAccess) -> dict[str, PageHandler]:
    """The monitor page's routes for `serve_operations(pages=...)`: `/`, `/v1/monitor/*` and an empty favicon."""

    def index(request: PageRequest) -> PageAnswer:
        return access.refusal(request, page=True) or _page_answer()

    def api(request: PageRequest) -> PageAnswer:
        return access.refusal(request) or answer_api(sources, request)

    def favicon(request: PageRequest) -> PageAnswer:
        return PageAnswer(204, b"", "image/x-icon", {"Cache-Control": "max-age=86400"})

    return {"/": index, API + "*": api, "/favicon.ico": favicon}


def pages_of(settings: MonitorSettings, store: MonitorStore, watch: ResourceWatch | None) -> dict[str, PageHandler]:
    """The monitor page over `store` and `watch`, with the settings' thresholds and access rules; the rollouts
    section reads the model registry in the same database (read only: the monitor never migrates its tables)."""
    sources = PageSources(
        store=store,
        watch=watch,
        psi_threshold=settings.monitor_psi_threshold,
        adwin_delta=settings.monitor_adwin_delta,
        registry=ModelRegistry(store.engine),
    )
    return monitor_pages(sources, PageAccess.of(settings))
