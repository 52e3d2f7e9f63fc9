"""The rule set a process runs, switched without a restart: the rules.sets follower (its own
thread) offers each new `current` set, validated; a worker's agents take it between two records,
the gateway and the gate between two requests, so every record and request is processed under one
whole set, never half of one."""

from __future__ import annotations

import threading

from streams.core import telemetry
from streams.core.models import RuleSet
from streams.core.rules import RULE_MODELS, RuleError, Rules, rules_from_texts
from streams.core.serde import AvroSerde, SerdeError

CURRENT = b"current"


class RuleSwitch:
    """The newest valid rule set and its generation; agents compare generations between records."""

    def __init__(
        self, rules: Rules, serde: AvroSerde, set_id: str = "local files", component: str = "worker"
    ) -> None:
        self._lock = threading.Lock()
        self.serde = serde
        self.rules = rules
        self.set_id = set_id
        self.generation = 0
        self.log = telemetry.get_logger(f"{component}.rules")
        self._export(rules, set_id, None)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """A record of rules.sets (the follower's callback): a new current set is validated and
        offered; an invalid one is refused (logged and counted) and the running set stays."""
        if key != CURRENT or value is None:
            return
        try:
            rule_set = self.serde.decode(value, RuleSet)
            rules = rules_from_texts(
                {n: f.text for n, f in rule_set.files.items()}, f"rule set {rule_set.set_id}"
            )
        except (SerdeError, RuleError) as exc:
            telemetry.RULE_SWITCHES.labels("refused").inc()
            self.log.error("rules_refused", error=str(exc)[:500])
            return
        with self._lock:
            if rule_set.set_id == self.set_id:
                return
            previous = self.set_id
            self.rules, self.set_id = rules, rule_set.set_id
            self.generation += 1
        self._export(rules, rule_set.set_id, previous)
        telemetry.RULE_SWITCHES.labels("switched").inc()
        self.log.info("rules_switching", set_id=rule_set.set_id, previous=previous, rules=rules.versions())

    def current(self) -> tuple[int, Rules]:
        with self._lock:
            return self.generation, self.rules

    def _export(self, rules: Rules, set_id: str, previous: str | None) -> None:
        for name, _model in RULE_MODELS:
            telemetry.RULES_VERSION.labels(f"{name}.toml").set(getattr(rules, name).version)
        if previous is not None:
            telemetry.RULES_SET.labels(previous).set(0)
        telemetry.RULES_SET.labels(set_id).set(1)
