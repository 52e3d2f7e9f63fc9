"""`itsmctl itsm check rt`: credentials, TLS, clock, the queues and custom fields, the rights the
sink needs as RT's REST 2 shows them, and queues the account sees beyond its own. Nothing is
written.

RT's REST 2 has no "my rights" call; it shows rights in its hypermedia links instead: a queue
offers a "create" link only with CreateTicket (RT::REST2::Resource::Queue), a ticket offers
"comment" only with CommentOnTicket and "lifecycle" actions only with ModifyTicket
(RT::REST2::Resource::Ticket). A queue the account cannot see answers 403.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.preflight import Finding, Level, body, clock_skew, request, run, transport
from connectors.sinks.rt.config import RTConfig
from streams.core.secrets import basic_auth


def check(config: RTConfig) -> list[Finding]:
    auth = basic_auth(config.user, config.password)
    return run(
        config.base_url,
        auth,
        config.verify,
        config.timeout_seconds,
        "ITSM_RT_VERIFY_TLS",
        lambda http: _check(http, config),
    )


def _links(doc: dict[str, Any]) -> set[str]:
    return {str(link.get("ref")) for link in doc.get("_hyperlinks") or [] if isinstance(link, dict)}


def _check(http: httpx.Client, config: RTConfig) -> list[Finding]:
    me = request(http, "GET", "/rt")
    if me.status_code == 401:
        return [
            Finding(
                "credentials",
                Level.PROBLEM,
                "RT refused the credentials (401)",
                "check ITSM_RT_USER and ITSM_RT_PASSWORD_FILE",
            )
        ]
    if me.status_code != 200:
        return [
            Finding(
                "api",
                Level.PROBLEM,
                f"{config.base_url}/rt answered HTTP {me.status_code}",
                "set ITSM_RT_URL to RT's base URL (REST 2 is under /REST/2.0)",
            )
        ]
    out = [
        transport(config.base_url),
        Finding("credentials", Level.OK, f"signed in as {config.user} (RT {body(me).get('Version', '?')})"),
        clock_skew(me),
    ]
    queues = sorted({config.incident_queue, config.change_queue})
    for name in queues:
        resp = request(http, "GET", f"/queue/{name}")
        if resp.status_code != 200:
            out.append(
                Finding(
                    f"queue {name}",
                    Level.PROBLEM,
                    f"not visible (HTTP {resp.status_code}): no such queue, or no SeeQueue right",
                    f"run `perl ops/rt/provision.pl {name}` and grant the account SeeQueue, ShowTicket, "
                    "CreateTicket, ModifyTicket, CommentOnTicket, SeeCustomField and ModifyCustomField on it",
                )
            )
            continue
        doc = body(resp)
        if "create" in _links(doc):
            out.append(Finding(f"queue {name}", Level.OK, "visible, may create tickets"))
        else:
            out.append(
                Finding(
                    f"queue {name}",
                    Level.PROBLEM,
                    "visible, but no CreateTicket right",
                    f"grant CreateTicket on {name}",
                )
            )
        fields = {str(cf.get("name")) for cf in doc.get("TicketCustomFields") or [] if isinstance(cf, dict)}
        for cf in (config.correlation_field, config.ci_field):
            if cf in fields:
                out.append(Finding(f"custom field {cf!r}", Level.OK, f"applies to {name}"))
            else:
                out.append(
                    Finding(
                        f"custom field {cf!r}",
                        Level.PROBLEM,
                        f"missing on {name} (or no SeeCustomField right)",
                        f"run `perl ops/rt/provision.pl {name}`",
                    )
                )
    out.extend(_ticket_rights(http, config))
    out.extend(_beyond(http, queues))
    return out


def _ticket_rights(http: httpx.Client, config: RTConfig) -> list[Finding]:
    query = f"Queue = '{config.incident_queue}' AND CF.{{{config.correlation_field}}} IS NOT NULL"
    resp = request(
        http, "GET", "/tickets", params={"query": query, "per_page": "1", "orderby": "id", "order": "DESC"}
    )
    if resp.status_code != 200:
        return [
            Finding(
                "search", Level.PROBLEM, f"ticket search answered HTTP {resp.status_code}", "grant ShowTicket"
            )
        ]
    items = body(resp).get("items") or []
    if not items:
        return [
            Finding("search", Level.OK, "ticket search works"),
            Finding("ticket rights", Level.WARN, "unverified: no ticket the pipeline opened exists yet"),
        ]
    ticket = body(request(http, "GET", f"/ticket/{items[0].get('id')}"))
    links = _links(ticket)
    missing = [
        right
        for ref, right in (("comment", "CommentOnTicket"), ("lifecycle", "ModifyTicket"))
        if ref not in links
    ]
    if missing:
        return [
            Finding("search", Level.OK, "ticket search works"),
            Finding(
                "ticket rights",
                Level.PROBLEM,
                f"ticket {ticket.get('id')}: no {', '.join(missing)}",
                f"grant {', '.join(missing)} on {config.incident_queue}",
            ),
        ]
    return [
        Finding("search", Level.OK, "ticket search works"),
        Finding("ticket rights", Level.OK, f"may comment on and resolve ticket {ticket.get('id')}"),
    ]


def _beyond(http: httpx.Client, queues: list[str]) -> list[Finding]:
    resp = request(http, "GET", "/queues/all", params={"per_page": "100"})
    seen = sorted({str(i.get("id")) for i in (body(resp).get("items") or []) if isinstance(i, dict)})
    names = []
    for queue_id in seen:
        doc = body(request(http, "GET", f"/queue/{queue_id}"))
        if doc.get("Name") and doc["Name"] not in queues:
            names.append(str(doc["Name"]))
    if not names:
        return [Finding("least privilege", Level.OK, "sees no queue beyond its own")]
    return [
        Finding(
            "least privilege",
            Level.WARN,
            f"the account sees {len(names)} queue(s) beyond its own ({', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''}): more than the sink needs",
            "use an account with rights on the pipeline's queues only (not root or a SuperUser)",
        )
    ]
