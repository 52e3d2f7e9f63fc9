"""Routing (ops/rules/routes.toml): which sinks receive an incident, and the fields each sets when
it opens, from the alert's labels and its CI, walked the way Alertmanager walks its route tree.

A node matches when all its matchers match. From the root, an incident goes down the first
matching child, and on to the next matching siblings only while the matching one says
`continue`; a node none of whose children match is where it ends (a "match"). Targets and fields
are inherited down the tree. Several matches (through `continue`) give the union of their targets
and their fields (the earlier match wins a field both set). No targets anywhere: every sink.

Matchers see the alert's labels and the CI's attributes as `ci_*` labels (ci_owner_group,
ci_service, ci_class, ci_environment, ci_criticality, ci_id) where the alert has no label of
that name, so a route can follow the CI's owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streams.core.matchers import Matcher, matches_all
from streams.core.models import ConfigurationItem
from streams.core.rules import Route, RouteRules
from streams.stages.alerts.state import AlertWork, Routed
from streams.stages.base import Ctx


@dataclass(frozen=True)
class _Node:
    name: str
    matchers: list[Matcher]
    targets: tuple[str, ...]
    fields: dict[str, dict[str, str]]
    continue_: bool
    children: list[_Node]
    hold: tuple[float, int] | None = None


def _merge(parent: dict[str, dict[str, str]], child: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    out = {t: dict(v) for t, v in parent.items()}
    for target, values in child.items():
        out.setdefault(target, {}).update(values)
    return out


def _compile(
    route: Route,
    targets: tuple[str, ...],
    fields: dict[str, dict[str, str]],
    hold: tuple[float, int] | None = None,
) -> _Node:
    mine = tuple(route.targets) if route.targets is not None else targets
    merged = _merge(fields, route.fields)
    if route.open_after_seconds is not None or route.open_after_count is not None:
        before = hold or (0.0, 0)
        hold = (
            route.open_after_seconds if route.open_after_seconds is not None else before[0],
            route.open_after_count if route.open_after_count is not None else before[1],
        )
    return _Node(
        route.name,
        route.compiled(),
        mine,
        merged,
        route.continue_,
        [_compile(r, mine, merged, hold) for r in route.route],
        hold,
    )


def route_labels(labels: Mapping[str, str], ci: ConfigurationItem | None) -> dict[str, str]:
    """The labels routes match: the alert's, and the CI's attributes as ci_* where not set."""
    out = dict(labels)
    if ci is not None:
        for name, value in (
            ("ci_id", ci.ci_id),
            ("ci_owner_group", ci.owner_group),
            ("ci_service", ci.service),
            ("ci_class", ci.ci_class),
            ("ci_environment", ci.environment),
            ("ci_criticality", ci.criticality.value),
        ):
            if value and name not in out:
                out[name] = value
    return out


class Router:
    """The compiled route tree."""

    def __init__(self, rules: RouteRules) -> None:
        self.version = rules.version
        root_targets = tuple(rules.targets)
        root_fields = {t: dict(v) for t, v in rules.fields.items()}
        self.root = _Node(
            "root",
            [],
            root_targets,
            root_fields,
            False,
            [_compile(r, root_targets, root_fields) for r in rules.route],
        )
        self._root = Routed(root_targets, {t: dict(v) for t, v in root_fields.items()}, ("root",))

    def route(self, labels: Mapping[str, str], ci: ConfigurationItem | None = None) -> Routed:
        if not self.root.children:  # no route: the root, whatever the alert (the usual case)
            return self._root
        seen = route_labels(labels, ci)
        matches: list[_Node] = []
        self._walk(self.root, seen, matches)
        if any(not node.targets for node in matches):
            targets: tuple[str, ...] = ()  # a match for every sink: every sink
        else:
            targets = tuple(dict.fromkeys(t for node in matches for t in node.targets))
        fields: dict[str, dict[str, str]] = {}
        for node in reversed(matches):  # the earlier match wins a field both set
            fields = _merge(fields, node.fields)
        if targets:
            fields = {t: v for t, v in fields.items() if t in targets}
        hold = next((node.hold for node in matches if node.hold is not None), None)  # the first's
        return Routed(targets, fields, tuple(node.name for node in matches), hold)

    def _walk(self, node: _Node, labels: Mapping[str, str], matches: list[_Node]) -> None:
        found = False
        for child in node.children:
            if not matches_all(child.matchers, labels):
                continue
            found = True
            self._walk(child, labels, matches)
            if not child.continue_:
                break
        if not found:
            matches.append(node)


class RoutingStage:
    """Sets where the incident goes (work.routed); the lifecycle carries it on its commands."""

    name = "routing"

    def __init__(self, rules: RouteRules) -> None:
        self.router = Router(rules)

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork:
        work.routed = self.router.route(work.alert.labels, work.ci)
        return work
