"""The development ITSM follows the ServiceNow Table API shapes the sinks rely on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from connectors.devitsm.server import Account, create_devitsm
from connectors.devitsm.store import Store
from tests.servers import serve


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    store = Store(":memory:")
    with serve(create_devitsm(store, "u", "p")) as url, httpx.Client(base_url=url, auth=("u", "p")) as client:
        yield client
    store.close()


def test_create_answers_201_with_the_result_envelope_and_string_values(api: httpx.Client) -> None:
    resp = api.post("/api/now/table/incident", json={"short_description": "a", "impact": 2, "urgency": 1})
    assert resp.status_code == 201
    rec = resp.json()["result"]
    assert rec["number"] == "INC0010001" and len(rec["sys_id"]) == 32
    assert (rec["impact"], rec["urgency"], rec["priority"], rec["state"]) == ("2", "1", "2", "1")
    assert resp.headers["Location"].endswith(f"/api/now/table/incident/{rec['sys_id']}")


def test_query_fields_limit_offset_and_order(api: httpx.Client) -> None:
    for i in range(5):
        api.post(
            "/api/now/table/incident", json={"short_description": f"n{i}", "correlation_id": f"c{i % 2}"}
        )
    resp = api.get(
        "/api/now/table/incident",
        params={
            "sysparm_query": "correlation_id=c0^ORDERBYDESCsys_created_on",
            "sysparm_fields": "number,short_description",
            "sysparm_limit": "2",
        },
    )
    assert resp.headers["X-Total-Count"] == "3"
    assert resp.json()["result"] == [
        {"number": "INC0010005", "short_description": "n4"},
        {"number": "INC0010003", "short_description": "n2"},
    ]
    page2 = api.get(
        "/api/now/table/incident", params={"sysparm_query": "correlation_id=c0", "sysparm_offset": "2"}
    )
    assert [r["short_description"] for r in page2.json()["result"]] == ["n4"]


def test_an_invalid_query_field_returns_no_rows_not_all_rows(api: httpx.Client) -> None:
    api.post("/api/now/table/incident", json={"short_description": "a"})
    resp = api.get("/api/now/table/incident", params={"sysparm_query": "no_such_field=1"})
    assert resp.status_code == 200 and resp.json()["result"] == []


def test_error_shapes(api: httpx.Client) -> None:
    missing = api.get("/api/now/table/incident/" + "0" * 32)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "No Record found",
            "detail": "Record doesn't exist or ACL restricts the record retrieval",
        },
        "status": "failure",
    }
    bad_table = api.get("/api/now/table/u_no_such_table")
    assert bad_table.status_code == 400
    assert bad_table.json()["error"]["message"] == "Invalid table u_no_such_table"
    bad_body = api.post(
        "/api/now/table/incident", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (
        bad_body.status_code == 400
        and bad_body.json()["error"]["message"] == "Exception while reading request"
    )
    unauth = httpx.get(str(api.base_url) + "/api/now/table/incident")
    assert unauth.status_code == 401 and unauth.json()["error"]["message"] == "User Not Authenticated"


def test_patch_updates_and_appends_work_notes(api: httpx.Client) -> None:
    rec = api.post("/api/now/table/incident", json={"short_description": "a", "work_notes": "one"}).json()[
        "result"
    ]
    api.patch(
        f"/api/now/table/incident/{rec['sys_id']}", json={"work_notes": "two", "state": "6", "number": "X"}
    )
    got = api.get(f"/api/now/table/incident/{rec['sys_id']}").json()["result"]
    assert got["work_notes"].startswith("two") and got["work_notes"].endswith("one")
    assert (got["state"], got["active"], got["number"], got["sys_mod_count"]) == (
        "6",
        "false",
        rec["number"],
        "1",
    )


def test_the_page_lists_incidents_and_changes_for_a_person(api: httpx.Client) -> None:
    api.post("/api/now/table/incident", json={"short_description": "<script>x</script>"})
    api.post("/api/now/table/change_request", json={"short_description": "deploy"})
    page = httpx.get(str(api.base_url) + "/").text
    assert "INC0010001" in page and "CHG0030001" in page
    assert "&lt;script&gt;" in page and "<script>x" not in page


# Encoded queries, after ServiceNow's "Encoded query strings"
# (https://www.servicenow.com/docs/r/yokohama/platform-user-interface/c_EncodedQueryStrings.html):
# <field><operator><value>, "^" is AND, "^OR" ORs a term with the one before, "^NQ" starts a new
# query OR-ed with the previous ones.


def correlation_ids(api: httpx.Client, query: str) -> list[str]:
    rows = api.get(
        "/api/now/table/incident",
        params={"sysparm_query": query + "^ORDERBYcorrelation_id", "sysparm_fields": "correlation_id"},
    ).json()["result"]
    return [r["correlation_id"] for r in rows]


def test_operator_words_inside_a_value_are_part_of_the_value(api: httpx.Client) -> None:
    # The sink's own lookup of a correlation id containing IN, LIKE, != or <= must find it.
    ids = ["itsmp-SVC-INCIDENT-1", "itsmp-LIKE-x", "a!=b", "p<=q", "plain"]
    for cid in ids:
        api.post("/api/now/table/incident", json={"short_description": "q", "correlation_id": cid})
    for cid in ids:
        assert correlation_ids(api, f"correlation_id={cid}") == [cid]
    assert correlation_ids(api, "correlation_idSTARTSWITHitsmp-SVC-IN") == ["itsmp-SVC-INCIDENT-1"]
    assert correlation_ids(api, "correlation_idLIKESVC-IN") == ["itsmp-SVC-INCIDENT-1"]


def test_or_nq_in_and_the_other_operators(api: httpx.Client) -> None:
    for i, (cid, urgency) in enumerate((("c1", 1), ("c2", 2), ("c3", 3), ("c4_x", 3))):
        api.post(
            "/api/now/table/incident",
            json={"short_description": f"n{i}", "correlation_id": cid, "urgency": urgency, "impact": 2},
        )
    assert correlation_ids(api, "correlation_id=c1^ORcorrelation_id=c3") == ["c1", "c3"]
    # ^OR binds to the term before it only: urgency=3 AND (c1 OR c3).
    assert correlation_ids(api, "urgency=3^correlation_id=c1^ORcorrelation_id=c3") == ["c3"]
    assert correlation_ids(api, "correlation_id=c1^NQurgency=3^correlation_idSTARTSWITHc4") == ["c1", "c4_x"]
    assert correlation_ids(api, "correlation_idINc2,c4_x") == ["c2", "c4_x"]
    assert correlation_ids(api, "correlation_idNOT INc2,c4_x") == ["c1", "c3"]
    assert correlation_ids(api, "correlation_id!=c1^urgency<=2") == ["c2"]
    assert correlation_ids(api, "correlation_idENDSWITH_x") == ["c4_x"]  # "_" is no wildcard
    assert correlation_ids(api, "correlation_idLIKEc^correlation_idNOT LIKE_") == ["c1", "c2", "c3"]
    assert correlation_ids(api, "correlation_idISNOTEMPTY^EQ") == ["c1", "c2", "c3", "c4_x"]
    assert correlation_ids(api, "correlation_idISEMPTY") == []
    assert correlation_ids(api, "not a term") == []  # invalid: no rows, never all rows


def test_reference_and_choice_fields_take_the_documented_shapes(api: httpx.Client) -> None:
    # Table API reference, sysparm_display_value and sysparm_exclude_reference_link.
    ci = api.post("/api/now/table/cmdb_ci", json={"name": "web-1"}).json()["result"]["sys_id"]
    made = api.post(
        "/api/now/table/change_request",
        json={"short_description": "x", "cmdb_ci": ci, "state": "-2", "approval": "approved"},
    ).json()["result"]
    origin = str(api.base_url).rstrip("/")
    link = f"{origin}/api/now/table/cmdb_ci/{ci}"
    fields = {"sysparm_fields": "cmdb_ci,state,approval,business_service"}

    def get(**params: str) -> dict[str, object]:
        rec = api.get(f"/api/now/table/change_request/{made['sys_id']}", params=fields | params)
        return dict(rec.json()["result"])

    assert made["cmdb_ci"] == {"link": link, "value": ci}  # the default: a link object
    assert get() == {"cmdb_ci": {"link": link, "value": ci}, "state": "-2", "approval": "approved",
                     "business_service": ""}  # fmt: skip
    assert get(sysparm_exclude_reference_link="true")["cmdb_ci"] == ci
    shown = get(sysparm_display_value="true")
    assert shown["cmdb_ci"] == {"display_value": "web-1", "link": link}  # the CI's name
    assert (shown["state"], shown["approval"]) == ("Scheduled", "Approved")  # choice labels
    both = get(sysparm_display_value="all", sysparm_exclude_reference_link="true")
    assert both["cmdb_ci"] == {"display_value": "web-1", "value": ci}
    assert both["state"] == {"display_value": "Scheduled", "value": "-2"}
    assert get(sysparm_display_value="all")["cmdb_ci"] == {
        "display_value": "web-1",
        "value": ci,
        "link": link,
    }
    listed = api.get("/api/now/table/change_request", params=fields).json()["result"][0]
    assert listed["cmdb_ci"] == {"link": link, "value": ci}


def test_a_reference_written_as_a_name_is_stored_as_given_and_displays_nothing(api: httpx.Client) -> None:
    # Without sysparm_input_display_value the value is the stored value: a name there dangles.
    made = api.post("/api/now/table/incident", json={"short_description": "x", "cmdb_ci": "web-9"})
    rec = made.json()["result"]
    assert rec["cmdb_ci"]["value"] == "web-9"
    shown = api.get(f"/api/now/table/incident/{rec['sys_id']}", params={"sysparm_display_value": "all"})
    assert shown.json()["result"]["cmdb_ci"]["display_value"] == ""


def test_input_display_value_binds_references_and_choice_labels(api: httpx.Client) -> None:
    # Table API reference, sysparm_input_display_value=true: input values are display values.
    group = api.post("/api/now/table/sys_user_group", json={"name": "db-team"})
    assert group.status_code == 403  # groups are the user administrator's (user_admin), not itil's
    ci = api.post("/api/now/table/cmdb_ci", json={"name": "db-1"}).json()["result"]["sys_id"]
    made = api.post(
        "/api/now/table/incident",
        params={"sysparm_input_display_value": "true", "sysparm_exclude_reference_link": "true"},
        json={
            "short_description": "x",
            "cmdb_ci": "db-1",
            "business_service": "nowhere",
            "state": "In Progress",
        },
    ).json()["result"]
    assert (made["cmdb_ci"], made["business_service"], made["state"]) == (ci, "", "2")


def test_an_operation_no_role_grants_is_refused_with_the_acl_message() -> None:
    store = Store(":memory:")
    readers = (
        Account("reader", "r", frozenset({"sn_incident_read"})),
        Account("root", "a", frozenset({"admin"})),
    )
    with serve(create_devitsm(store, "u", "p", accounts=readers)) as url:
        reader = httpx.Client(base_url=url, auth=("reader", "r"))
        assert reader.get("/api/now/table/incident").status_code == 200
        assert reader.get("/api/now/table/cmdb_ci").status_code == 200  # sn_incident_read contains cmdb_read
        refused = reader.post("/api/now/table/incident", json={"short_description": "x"})
        assert refused.status_code == 403
        assert refused.json() == {
            "error": {
                "message": "Operation Failed",
                "detail": "ACL Exception Insert Failed due to security constraints",
            },
            "status": "failure",
        }
        assert reader.get("/api/now/table/change_request").status_code == 403
        assert reader.get("/api/now/table/sys_dictionary").status_code == 403
        admin = httpx.Client(base_url=url, auth=("root", "a"))
        assert admin.get("/api/now/table/sys_dictionary", params={"sysparm_limit": "1"}).status_code == 200
        # The roles as the instance lists them: granted ones and the ones they contain.
        user = admin.get("/api/now/table/sys_user", params={"sysparm_query": "user_name=reader"}).json()
        roles = admin.get(
            "/api/now/table/sys_user_has_role",
            params={"sysparm_query": f"user={user['result'][0]['sys_id']}", "sysparm_display_value": "true"},
        ).json()["result"]
        assert sorted((r["role"]["display_value"], r["inherited"]) for r in roles) == [
            ("cmdb_read", "true"),
            ("sn_incident_read", "false"),
        ]
    store.close()


def test_a_dictionary_entry_adds_a_column_and_a_data_policy_refuses_an_insert_without_its_field() -> None:
    store = Store(":memory:")
    admin = (Account("root", "a", frozenset({"admin"})),)
    with serve(
        create_devitsm(store, "u", "p", accounts=admin, mandatory={"incident": ("assignment_group",)})
    ) as url:
        api = httpx.Client(base_url=url, auth=("u", "p"))
        api.post("/api/now/table/change_request", json={"short_description": "c", "u_build": "42"})
        assert "u_build" not in api.get("/api/now/table/change_request").json()["result"][0]  # ignored
        root = httpx.Client(base_url=url, auth=("root", "a"))
        made = root.post(
            "/api/now/table/sys_dictionary",
            json={"name": "change_request", "element": "u_build", "internal_type": "string"},
        )
        assert made.status_code == 201
        api.post("/api/now/table/change_request", json={"short_description": "d", "u_build": "43"})
        assert [r["u_build"] for r in api.get("/api/now/table/change_request").json()["result"]] == ["", "43"]
        refused = api.post("/api/now/table/incident", json={"short_description": "x"})
        assert refused.status_code == 403
        assert refused.json()["error"]["detail"] == (
            "Data Policy Exception: The following fields are mandatory: assignment_group"
        )
    store.close()
