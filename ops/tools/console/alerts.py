"""Three of Prometheus' alert rules, read from ``ops/deploy/prometheus/alerts.yml`` and evaluated here.

``AllInOneHighErrorRatio``, ``AllInOneSlowResponses`` and ``AllInOneMemoryHigh``, with thresholds,
windows and ``for`` durations read from the rules file; an edit that changes a rule's shape stops the
console with ``AlertRulesError`` rather than let the two drift. States follow Prometheus: ``pending``
until the condition has held for ``for``, then ``firing``; no data resets it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Mapping

from engine.errors import ConfigError
from ops.common.paths import REPO_ROOT
from ops.tools.console.promtext import Increase, MetricsReading

__all__ = ["AlertName", "AlertRule", "AlertRules", "AlertRulesError", "AlertState", "AlertStatus", "AlertTracker",
           "DEFAULT_ALERTS_FILE", "load_alert_rules", "parse_duration", "rule_values"]

DEFAULT_ALERTS_FILE = REPO_ROOT / "ops" / "deploy" / "prometheus" / "alerts.yml"


class AlertRulesError(ConfigError):
    """The rules file is missing a rule, or a rule no longer has the shape the console evaluates."""


class AlertName(str, Enum):
    HIGH_ERROR_RATIO = "AllInOneHighErrorRatio"
    SLOW_RESPONSES = "AllInOneSlowResponses"
    MEMORY_HIGH = "AllInOneMemoryHigh"


class AlertState(str, Enum):
    INACTIVE = "ok"
    PENDING = "pending"
    FIRING = "firing"
    NO_DATA = "no data"


@dataclass(frozen=True)
class AlertRule:
    name: AlertName
    above: float  # the condition is value > above
    window_s: float | None  # the rate() window; None for an instant value
    for_s: float


@dataclass(frozen=True)
class AlertRules:
    rules: tuple[AlertRule, ...]
    ok_outcomes: frozenset[str]  # outcomes that are not errors (the error ratio's outcome!~ regex)

    def rule(self, name: AlertName) -> AlertRule:
        return next(r for r in self.rules if r.name is name)

    def is_error(self, outcome: str) -> bool:
        return outcome not in self.ok_outcomes


@dataclass(frozen=True)
class AlertStatus:
    name: AlertName
    state: AlertState
    value: float | None
    above: float


_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_THRESHOLD = re.compile(r">\s*" + _NUMBER + r"\s*\Z")
_WINDOW = re.compile(r"\[([0-9]+[smh])\]")
_OK_OUTCOMES = re.compile(r'allinone_requests_total\{outcome!~"([a-z_]+(?:\|[a-z_]+)*)"\}')
_DURATION = re.compile(r"\A([0-9]+)([smh])\Z")
# What each expression must contain, besides its threshold: the series this module reads, combined the
# way it combines them (whitespace normalised).
_SHAPES = {
    AlertName.HIGH_ERROR_RATIO: ("sum by (job, instance) (rate(allinone_requests_total{outcome!~",
                                 "/ sum by (job, instance) (rate(allinone_requests_total["),
    AlertName.SLOW_RESPONSES: ("rate(allinone_request_duration_seconds_sum[",
                               "/ sum by (job, instance, task) (rate(allinone_request_duration_seconds_count[",
                               "unless on (job, instance, task) allinone_time_to_first_token_seconds_count",
                               "rate(allinone_time_to_first_token_seconds_sum[",
                               "/ sum by (job, instance, task) (rate(allinone_time_to_first_token_seconds_count["),
    AlertName.MEMORY_HIGH: ("(process_resident_memory_bytes + allinone_worker_resident_memory_bytes) "
                            "/ allinone_memory_limit_bytes >",),
}


def parse_duration(text: str) -> float:
    """Prometheus' ``30s``, ``5m``, ``1h`` in seconds (only the single-unit forms the rules use)."""
    match = _DURATION.match(str(text).strip())
    if match is None:
        raise AlertRulesError(f"{text!r} is not a duration like 30s, 5m or 1h")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def load_alert_rules(path: Path = DEFAULT_ALERTS_FILE) -> AlertRules:
    """The three rules from the Prometheus rules file; ``AlertRulesError`` saying what is wrong otherwise."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        found = {rule["alert"]: rule for group in document["groups"] for rule in group["rules"] if "alert" in rule}
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise AlertRulesError(f"cannot read the alert rules in {path}: {exc}") from exc
    rules, ok_outcomes = [], None
    for name in AlertName:
        if name.value not in found:
            raise AlertRulesError(f"{path} has no alert {name.value}")
        spec = found[name.value]
        expr = " ".join(str(spec.get("expr", "")).split())
        where = f"{path}: {name.value}"
        for needed in _SHAPES[name]:
            if needed not in expr:
                raise AlertRulesError(f"{where}: its expression no longer contains {needed!r}; "
                                      "update ops/tools/console/alerts.py with it")
        threshold = _THRESHOLD.search(expr)
        if threshold is None:
            raise AlertRulesError(f"{where}: its expression does not end in '> <number>'")
        windows = set(_WINDOW.findall(expr))
        if len(windows) > 1:
            raise AlertRulesError(f"{where}: rate windows differ ({', '.join(sorted(windows))})")
        if not windows and name is not AlertName.MEMORY_HIGH:
            raise AlertRulesError(f"{where}: no rate window ([5m]) in its expression")
        if name is AlertName.HIGH_ERROR_RATIO:
            outcomes = _OK_OUTCOMES.findall(expr)
            if len(outcomes) != 1:
                raise AlertRulesError(f'{where}: expected one outcome!~"a|b|..." list of plain outcome names')
            ok_outcomes = frozenset(outcomes[0].split("|"))
        rules.append(AlertRule(name, float(threshold.group(1)),
                               parse_duration(windows.pop()) if windows else None,
                               parse_duration(spec.get("for", "0s"))))
    return AlertRules(tuple(rules), ok_outcomes)


def rule_values(rules: AlertRules, increase_over: Callable[[float], Increase | None],
                reading: MetricsReading) -> dict[AlertName, float | None]:
    """Each rule's value now, as its expression computes it (None: no data, as Prometheus' empty result).

    ``increase_over(seconds)`` is what happened in the last ``seconds``. Latency: the slowest task's
    mean (each task is its own series in Prometheus, and any one of them fires the alert)."""
    errors = increase_over(rules.rule(AlertName.HIGH_ERROR_RATIO).window_s)
    slow = increase_over(rules.rule(AlertName.SLOW_RESPONSES).window_s)
    means = slow.mean_latency_by_task() if slow is not None else {}
    return {
        AlertName.HIGH_ERROR_RATIO: None if errors is None else errors.error_ratio(rules.is_error),
        AlertName.SLOW_RESPONSES: max(means.values()) if means else None,
        AlertName.MEMORY_HIGH: reading.memory_ratio,
    }


class AlertTracker:
    """One node's alert states over time: since when each rule's condition has held."""

    def __init__(self, rules: AlertRules) -> None:
        self.rules = rules
        self._since: dict[AlertName, float] = {}

    def update(self, now: float, values: Mapping[AlertName, float | None]) -> tuple[AlertStatus, ...]:
        """The states at ``now`` from each rule's current value (None: no data)."""
        states = []
        for rule in self.rules.rules:
            value = values.get(rule.name)
            if value is None or not value > rule.above:
                self._since.pop(rule.name, None)
                state = AlertState.NO_DATA if value is None else AlertState.INACTIVE
            else:
                since = self._since.setdefault(rule.name, now)
                state = AlertState.FIRING if now - since >= rule.for_s else AlertState.PENDING
            states.append(AlertStatus(rule.name, state, value, rule.above))
        return tuple(states)
