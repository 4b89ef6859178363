"""The SMS Partner simulator, exercised over real HTTP with ``requests``."""

from __future__ import annotations

import ast
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import smsp_exporter.simulator as simulator_package
from smsp_exporter.simulator import (
    DEFAULT_START_TIME,
    DEMO_TAGS,
    FAULT_KINDS,
    WRONG_SHAPE_VARIANTS,
    Message,
    Simulator,
    TagSpec,
    main,
)

pytestmark = pytest.mark.timeout(60)

PROMO = TagSpec("promo", 250, send_spread=100.0, report_delay=20.0, stop=0.2)
OTHER = TagSpec("other", 30, send_spread=10.0, report_delay=5.0)
SUCCESS_KEYS = ["success", "code", "currentPage", "total", "StatutResponse_List"]
ITEM_KEYS = ["phoneNumber", "status", "stopSMS", "date"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(seed=7, page_size=100, tags=[PROMO, OTHER])
    s.freeze(0.0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(
    http: requests.Session, sim: Simulator, endpoint: str = "bulk-status-by-tag", **params: Any
) -> requests.Response:
    timeout = params.pop("timeout", 5)
    params.setdefault("apiKey", sim.api_key)
    return http.get(f"{sim.url}/{endpoint}", params=params, timeout=timeout)


def page(http: requests.Session, sim: Simulator, tag: str, n: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"tag": tag}
    if n is not None:
        params["page"] = n
    response = get(http, sim, **params)
    assert response.status_code == 200
    return response.json()


def all_items(http: requests.Session, sim: Simulator, tag: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    first = page(http, sim, tag, 1)
    items += first["StatutResponse_List"]
    n = 2
    while len(items) < first["total"]:
        got = page(http, sim, tag, n)["StatutResponse_List"]
        assert got, "a page before the end came back empty"
        items += got
        n += 1
    return items


def tally(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "statuses": dict(Counter(i["status"] for i in items)),
        "stop": sum(1 for i in items if i["stopSMS"]),
        "total": len(items),
    }


# ----------------------------------------------------------------------------- shape


def test_success_shape_and_key_order(sim: Simulator, http: requests.Session) -> None:
    sim.advance(1000)
    response = get(http, sim, tag="promo")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.content)
    doc = response.json()
    assert list(doc) == SUCCESS_KEYS
    assert doc["success"] is True and doc["code"] == 200
    assert doc["currentPage"] == 1 and doc["total"] == 250
    items = doc["StatutResponse_List"]
    assert len(items) == 100
    for item in items:
        assert list(item) == ITEM_KEYS
        assert re.fullmatch(r"\+336\d{8}", item["phoneNumber"])
        assert item["status"] in ("Delivered", "Not delivered", "Waiting")
        assert isinstance(item["stopSMS"], bool)
        assert isinstance(item["date"], str) and item["date"].isdigit()
        assert DEFAULT_START_TIME <= int(item["date"]) <= DEFAULT_START_TIME + 1000


def test_pagination_partitions_the_tag(sim: Simulator, http: requests.Session) -> None:
    sim.advance(60)  # mid-campaign: some sent, some waiting
    expected = sim.expected("promo")
    assert 0 < expected["total"] < 250
    sizes = [len(page(http, sim, "promo", n)["StatutResponse_List"]) for n in (1, 2, 3)]
    assert sum(sizes) == expected["total"]
    items = all_items(http, sim, "promo")
    assert len({i["phoneNumber"] for i in items}) == len(items) == expected["total"]
    assert tally(items) == expected
    past = page(http, sim, "promo", 99)
    assert past["StatutResponse_List"] == [] and past["currentPage"] == 99
    assert past["total"] == expected["total"]


def test_page_size_knob_and_order_is_stable(sim: Simulator, http: requests.Session) -> None:
    sim.advance(10_000)
    sim.page_size = 7
    items = all_items(http, sim, "promo")
    assert len(items) == 250
    assert len(page(http, sim, "promo", 36)["StatutResponse_List"]) == 5  # 250 = 35*7 + 5
    sim.page_size = 250
    assert page(http, sim, "promo")["StatutResponse_List"] == items


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "1.5", "", " ", "²"])
def test_page_that_is_not_a_positive_integer_is_page_one(
    sim: Simulator, http: requests.Session, raw: str
) -> None:
    sim.advance(1000)
    doc = page(http, sim, "promo", raw)  # type: ignore[arg-type]
    assert doc["currentPage"] == 1
    assert doc["StatutResponse_List"] == page(http, sim, "promo")["StatutResponse_List"]
    assert sim.stats()["by_page"][("promo", 1)] == 2


def test_huge_page_number_is_past_the_end(sim: Simulator, http: requests.Session) -> None:
    doc = page(http, sim, "promo", "9" * 5000)  # type: ignore[arg-type]
    assert doc["success"] is True and doc["StatutResponse_List"] == []


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"apiKey": None}, 1, "La Clé API est requise"),
        ({"apiKey": ""}, 1, "La Clé API est requise"),
        ({"apiKey": "nope"}, 10, "Clé API incorrecte"),
        ({"tag": "unknown"}, 4, "Message introuvable"),
        ({"tag": ""}, 4, "Message introuvable"),
        ({}, 4, "Message introuvable"),
    ],
)
def test_error_bodies(
    sim: Simulator, http: requests.Session, params: dict[str, Any], code: int, message: str
) -> None:
    response = get(http, sim, **params)
    assert response.status_code == 200
    assert list(response.json()) == ["success", "code", "message"]
    assert response.json() == {"success": False, "code": code, "message": message}


def test_key_is_checked_on_me_too(sim: Simulator, http: requests.Session) -> None:
    assert get(http, sim, "me", apiKey="bad").json()["code"] == 10
    assert get(http, sim, "me", apiKey=None).json()["code"] == 1


def test_error_http_status_knob(sim: Simulator, http: requests.Session) -> None:
    sim.error_http_status = 401
    response = get(http, sim, apiKey="bad", tag="promo")
    assert response.status_code == 401 and response.json()["code"] == 10
    assert get(http, sim, tag="promo").status_code == 200


def test_unknown_path_is_404_json(sim: Simulator, http: requests.Session) -> None:
    response = http.get(f"{sim.url}/nowhere", timeout=5)
    assert response.status_code == 404 and response.json()["success"] is False
    assert http.get(f"{sim.base_url}/", timeout=5).status_code == 404
    assert http.post(f"{sim.url}/me", timeout=5).status_code == 405


def test_empty_tag_is_not_found(sim: Simulator, http: requests.Session) -> None:
    sim.add_tag(TagSpec("none-yet", 0))
    assert get(http, sim, tag="none-yet").json()["code"] == 4
    sim.remove_tag("promo")
    assert get(http, sim, tag="promo").json()["code"] == 4
    with pytest.raises(KeyError):
        sim.expected("promo")


# ----------------------------------------------------------------------------- the model


def test_clock_moves_waiting_to_final_statuses(sim: Simulator, http: requests.Session) -> None:
    start = sim.expected("promo")
    assert start == {"statuses": {"Waiting": 1}, "stop": 0, "total": 1}
    assert page(http, sim, "promo")["StatutResponse_List"][0]["date"] == str(DEFAULT_START_TIME)
    previous = start
    for _ in range(40):
        sim.advance(15)
        now = sim.expected("promo")
        assert now["total"] >= previous["total"]
        for status in ("Delivered", "Not delivered"):
            assert now["statuses"].get(status, 0) >= previous["statuses"].get(status, 0)
        assert now["stop"] >= previous["stop"]
        previous = now
    assert tally(all_items(http, sim, "promo")) == previous
    sim.advance(48 * 3600 + 10_000)  # everything reported, every STOP in
    final = sim.expected("promo")
    assert final["total"] == 250
    assert final["statuses"]["Delivered"] > 200
    assert 0 < final["statuses"].get("Waiting", 0) < 40  # the never-reported ones
    assert tally(all_items(http, sim, "promo")) == final


def test_dates_are_report_time_or_send_time(http: requests.Session) -> None:
    spec = TagSpec("d", 10, delivered=1.0, not_delivered=0.0, stop=0.0, send_spread=100.0)
    with Simulator(tags=[spec], start_time=1_600_000_000) as s:
        s.freeze(0)
        s.advance(1000)
        items = page(http, s, "d")["StatutResponse_List"]
        dates = [int(i["date"]) for i in items]
        assert all(i["status"] == "Delivered" for i in items)
        # delivered i: sent at 10*i, reported some time later
        assert all(d >= 1_600_000_000 + 10 * n for n, d in enumerate(dates))
        assert dates != [1_600_000_000 + 10 * n for n in range(10)]


def snapshot(seed: int, at: float) -> str:
    s = Simulator(seed=seed, tags=[PROMO])
    s.freeze(at)
    with s, requests.Session() as session:
        return get(session, s, tag="promo").text


def test_same_seed_same_answers_different_seed_different() -> None:
    assert snapshot(1, 80) == snapshot(1, 80)
    assert snapshot(1, 80) != snapshot(2, 80)
    assert snapshot(1, 80) != snapshot(1, 90)


def test_replacing_a_tagspec_at_runtime(sim: Simulator, http: requests.Session) -> None:
    sim.advance(10_000)
    before = sim.expected("other")
    sim.add_tag(TagSpec("other", 30, delivered=0.0, not_delivered=1.0, send_spread=10.0))
    after = sim.expected("other")
    assert after == {"statuses": {"Not delivered": 30}, "stop": 0, "total": 30}
    assert after != before
    assert tally(all_items(http, sim, "other")) == after
    assert sim.spec("other") is not None and sim.spec("other").not_delivered == 1.0


def test_set_messages_exact(sim: Simulator, http: requests.Session) -> None:
    messages = [
        Message("+33600000001", "ko", False, 1517989111),
        Message("+33600000002", "DELIVRD", True, 1517989101),
        Message("+33600000003", "Delivered", False, 1517989100),
    ]
    sim.set_messages("odd", messages)
    doc = page(http, sim, "odd")
    assert doc == {
        "success": True,
        "code": 200,
        "currentPage": 1,
        "total": 3,
        "StatutResponse_List": [
            {"phoneNumber": "+33600000001", "status": "ko", "stopSMS": False, "date": "1517989111"},
            {
                "phoneNumber": "+33600000002",
                "status": "DELIVRD",
                "stopSMS": True,
                "date": "1517989101",
            },
            {
                "phoneNumber": "+33600000003",
                "status": "Delivered",
                "stopSMS": False,
                "date": "1517989100",
            },
        ],
    }
    assert sim.expected("odd") == {
        "statuses": {"ko": 1, "DELIVRD": 1, "Delivered": 1},
        "stop": 1,
        "total": 3,
    }


def test_tag_with_ampersand_accent_and_space(sim: Simulator, http: requests.Session) -> None:
    name = "soldes & été+2"
    sim.set_messages(name, [Message("+33600000001", "Delivered", False, 1)])
    doc = page(http, sim, name)
    assert doc["total"] == 1
    assert sim.stats()["by_tag"] == {name: 1}
    # the naive concatenation of the public clients does not find it
    naive = http.get(f"{sim.url}/bulk-status-by-tag?apiKey={sim.api_key}&tag={name}", timeout=5)
    assert naive.json()["code"] == 4


def test_me_credits_fall_as_messages_are_sent(sim: Simulator, http: requests.Session) -> None:
    doc = get(http, sim, "me").json()
    assert list(doc) == ["success", "code", "user", "credits"]
    assert doc["user"] == {"username": "demo", "firstname": "Demo", "lastname": "User"}
    credits = doc["credits"]
    assert list(credits) == [
        "creditSms",
        "creditSmsECO",
        "creditHlr",
        "toSend",
        "solde",
        "currency",
        "balance",
    ]
    assert credits["creditSms"] == 10_000 - 2  # the first message of each tag left at t=0
    assert credits["solde"] == credits["balance"] == "499.91"
    sim.advance(1000)
    credits = get(http, sim, "me").json()["credits"]
    assert credits["creditSms"] == 10_000 - 280
    assert credits["solde"] == f"{500 - 280 * 0.045:.2f}" == "487.40"
    assert credits["currency"] == "EUR"


def test_tagspec_validation() -> None:
    with pytest.raises(ValueError):
        TagSpec("x", -1)
    with pytest.raises(ValueError):
        TagSpec("x", 10, delivered=0.8, not_delivered=0.3)
    with pytest.raises(ValueError):
        TagSpec("", 10)
    with pytest.raises(ValueError):
        Simulator(host="0.0.0.0")


def test_real_clock_runs_with_speed() -> None:
    with Simulator(speed=1000.0, tags=[OTHER]) as s:
        t0 = s.now()
        time.sleep(0.05)
        assert s.now() - t0 >= 40
        s.freeze()
        frozen = s.now()
        time.sleep(0.02)
        assert s.now() == frozen
        s.unfreeze()
        time.sleep(0.02)
        assert s.now() > frozen


def test_custom_clock() -> None:
    t = [5.0]
    s = Simulator(clock=lambda: t[0], tags=[OTHER])
    assert s.now() == 5.0
    t[0] = 7.0
    assert s.now() == 7.0
    s.advance(3)
    assert s.now() == 10.0


def test_demo_tags_move_over_the_first_minutes() -> None:
    names = [spec.name for spec in DEMO_TAGS]
    assert len(set(names)) == len(names) >= 3
    assert all(len(n) <= 20 and n == n.lower() and " " not in n for n in names)
    s = Simulator(tags=DEMO_TAGS)
    s.freeze(30)
    early = {n: s.expected(n) for n in names}
    s.advance(270)
    late = {n: s.expected(n) for n in names}
    for n in names:
        assert late[n]["total"] >= early[n]["total"]
        assert late[n]["statuses"].get("Delivered", 0) > early[n]["statuses"].get("Delivered", 0)


def test_a_million_message_tag(http: requests.Session) -> None:
    began = time.perf_counter()
    s = Simulator(tags=[TagSpec("big", 1_000_000, send_spread=0.0)])
    created = time.perf_counter() - began
    s.freeze(3600)
    with s:
        began = time.perf_counter()
        doc = page(http, s, "big", 5000)
        served = time.perf_counter() - began
        assert doc["total"] == 1_000_000 and doc["currentPage"] == 5000
        assert len(doc["StatutResponse_List"]) == 100
        assert page(http, s, "big", 10_001)["StatutResponse_List"] == []
        began = time.perf_counter()
        expected = s.expected("big")
        counted = time.perf_counter() - began
    assert expected["total"] == 1_000_000
    print(f"1M tag: created in {created:.2f}s, page 5000 in {served:.3f}s, truth in {counted:.2f}s")
    assert created < 30  # generous: a slow CI box; typically ~1.5 s


# ----------------------------------------------------------------------------- faults


def test_fault_http_status(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault("promo", "http_status", status=503)
    response = get(http, sim, tag="promo")
    assert response.status_code == 503 and "503" in response.text
    assert get(http, sim, tag="other").status_code == 200
    sim.set_fault(None, "http_status", status=500, body={"success": False, "code": 500})
    response = get(http, sim, tag="other")
    assert response.status_code == 500 and response.json()["code"] == 500
    assert get(http, sim, "me").status_code == 500  # tag None: every request


def test_fault_rate_limit_with_retry_after(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault(None, "rate_limit", retry_after=7, times=1)
    response = get(http, sim, tag="promo")
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert get(http, sim, tag="promo").status_code == 200


def test_fault_rate_limit_rps(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault(None, "rate_limit", rps=5)
    codes = [get(http, sim, tag="promo").status_code for _ in range(12)]
    assert codes[:5] == [200] * 5
    assert 429 in codes[5:]
    assert "Retry-After" not in get(http, sim, tag="promo").headers


def test_fault_api_error(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault("promo", "api_error", code=96)
    assert get(http, sim, tag="promo").json() == {
        "success": False,
        "code": 96,
        "message": "Erreur 96",
    }
    sim.set_fault(None, "api_error", code=30, message="Compte bloqué", status=403)
    response = get(http, sim, tag="other")
    assert response.status_code == 403 and response.json()["message"] == "Compte bloqué"


def test_fault_delay_makes_client_time_out(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault("promo", "delay", seconds=2.0)
    began = time.monotonic()
    with pytest.raises(requests.Timeout):
        get(http, sim, tag="promo", timeout=0.3)
    assert time.monotonic() - began < 1.5
    assert get(http, sim, tag="other", timeout=1).status_code == 200


def test_fault_delay_adds_to_another_fault(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault(None, "delay", seconds=0.2)
    sim.set_fault(None, "http_status", status=502)
    began = time.monotonic()
    assert get(http, sim, tag="promo").status_code == 502
    assert time.monotonic() - began >= 0.2


def test_fault_reset_mid_body(sim: Simulator, http: requests.Session) -> None:
    sim.advance(1000)
    sim.set_fault("promo", "reset", times=1)
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        get(http, sim, tag="promo").json()
    assert get(http, sim, tag="promo").status_code == 200  # a new connection works


def test_fault_reset_at_start(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault(None, "reset", at="start", times=1)
    with pytest.raises(requests.ConnectionError):
        get(http, sim, tag="promo")
    assert get(http, sim, tag="promo").status_code == 200


def test_fault_reset_sends_rst_after_partial_body(sim: Simulator) -> None:
    sim.advance(1000)
    sim.set_fault("promo", "reset")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
        request = f"GET /v1/bulk-status-by-tag?apiKey={sim.api_key}&tag=promo HTTP/1.1\r\n"
        conn.sendall(f"{request}Host: x\r\n\r\n".encode())
        received = b""
        with pytest.raises(ConnectionResetError):
            while chunk := conn.recv(65536):
                received += chunk
            raise AssertionError("the connection ended with a FIN, not a RST")
    assert received.startswith(b"HTTP/1.1 200") or received == b""


def test_fault_html(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault(None, "html")
    response = get(http, sim, tag="promo")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


def test_fault_truncated_json(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault("promo", "truncated_json")
    response = get(http, sim, tag="promo")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) > 0
    with pytest.raises(ValueError):
        json.loads(response.content)


@pytest.mark.parametrize("variant", sorted(WRONG_SHAPE_VARIANTS))
def test_fault_wrong_shape(sim: Simulator, http: requests.Session, variant: str) -> None:
    sim.advance(1000)
    sim.set_fault("promo", "wrong_shape", variant=variant)
    doc = page(http, sim, "promo")
    items = doc.get("StatutResponse_List") if isinstance(doc, dict) else doc
    checks = {
        "list_missing": lambda: "StatutResponse_List" not in doc,
        "list_null": lambda: doc["StatutResponse_List"] is None,
        "list_not_list": lambda: isinstance(items, dict) and len(items) == 100,
        "no_status": lambda: all("status" not in i for i in items),
        "total_negative": lambda: doc["total"] == -1,
        "total_absurd": lambda: doc["total"] == 10**15,
        "total_missing": lambda: "total" not in doc,
        "total_string": lambda: doc["total"] == "250",
        "not_object": lambda: isinstance(doc, list) and len(doc) == 100,
    }
    assert checks[variant]()


def test_fault_ignore_page(sim: Simulator, http: requests.Session) -> None:
    sim.advance(1000)
    first = page(http, sim, "promo", 1)
    sim.set_fault("promo", "ignore_page")
    third = page(http, sim, "promo", 3)
    assert third == first and third["currentPage"] == 1


def test_fault_short_page(sim: Simulator, http: requests.Session) -> None:
    sim.advance(1000)
    sim.set_fault("promo", "short_page", page=2, keep=30)
    assert len(page(http, sim, "promo", 1)["StatutResponse_List"]) == 100
    second = page(http, sim, "promo", 2)
    assert len(second["StatutResponse_List"]) == 30 and second["total"] == 250
    sim.clear_faults()
    sim.set_fault("promo", "short_page")
    assert len(page(http, sim, "promo", 1)["StatutResponse_List"]) == 50


def test_fault_page_error(sim: Simulator, http: requests.Session) -> None:
    sim.advance(1000)
    sim.set_fault("promo", "page_error", page=2)
    assert get(http, sim, tag="promo", page=1).status_code == 200
    assert get(http, sim, tag="promo", page=2).status_code == 500
    assert get(http, sim, tag="promo", page=3).status_code == 200
    with pytest.raises(ValueError):
        sim.set_fault("promo", "page_error")


def test_fault_empty(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault("promo", "empty")
    assert page(http, sim, "promo") == {
        "success": True,
        "code": 200,
        "currentPage": 1,
        "total": 0,
        "StatutResponse_List": [],
    }
    assert get(http, sim, "me").status_code == 200  # page kinds never touch /me


def test_fault_times_expiry_and_clear(sim: Simulator, http: requests.Session) -> None:
    sim.set_fault("promo", "http_status", status=502, times=2)
    codes = [get(http, sim, tag="promo").status_code for _ in range(4)]
    assert codes == [502, 502, 200, 200]
    assert sim.faults() == []
    fault_id = sim.set_fault(None, "http_status", status=503)
    assert get(http, sim, tag="other").status_code == 503
    sim.remove_fault(fault_id)
    assert get(http, sim, tag="other").status_code == 200
    sim.set_fault(None, "http_status", status=503, endpoint="me")
    assert get(http, sim, tag="other").status_code == 200
    assert get(http, sim, "me").status_code == 503
    sim.clear_faults()
    assert get(http, sim, "me").status_code == 200
    assert sim.stats()["faults_applied"] == {"http_status": 4}


def test_fault_validation(sim: Simulator) -> None:
    for kind, params in [
        ("nope", {}),
        ("http_status", {"statuss": 500}),
        ("wrong_shape", {"variant": "nope"}),
        ("api_error", {}),
        ("reset", {"at": "never"}),
        ("delay", {"times": "2"}),
    ]:
        with pytest.raises(ValueError):
            sim.set_fault(None, kind, **params)
    assert set(FAULT_KINDS) >= {"http_status", "rate_limit", "reset", "wrong_shape", "empty"}


# ----------------------------------------------------------------------------- stats


def test_stats_counters(sim: Simulator, http: requests.Session) -> None:
    sim.advance(1000)
    for n in (1, 2, 3, 2):
        page(http, sim, "promo", n)
    get(http, sim, "me")
    http.get(f"{sim.url}/nowhere", timeout=5)
    stats = sim.stats()
    assert stats["requests"] == 6
    assert stats["by_path"] == {
        "/v1/bulk-status-by-tag": 4,
        "/v1/me": 1,
        "/v1/nowhere": 1,
    }
    assert stats["by_tag"] == {"promo": 4}
    assert stats["by_page"] == {("promo", 1): 1, ("promo", 2): 2, ("promo", 3): 1}
    assert stats["by_status"] == {200: 5, 404: 1}
    assert stats["connections"] == 1  # keep-alive: one TCP connection for everything
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    assert len(sim.request_times()) == 6
    times = sim.request_times()
    assert times == sorted(times)
    sim.reset_stats()
    assert sim.stats()["requests"] == 0 and sim.request_times() == []


def test_concurrent_keep_alive_connections_with_latency(sim: Simulator) -> None:
    sim.advance(1000)
    sim.latency = 0.1
    workers, rounds = 20, 3
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            for _ in range(rounds):
                code = get(session, sim, tag="promo").status_code
                with lock:
                    results.append(code)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - began
    assert results == [200] * workers * rounds
    stats = sim.stats()
    assert stats["connections"] == workers
    assert stats["max_in_flight"] >= workers // 2
    assert elapsed < rounds * 0.1 * 4  # concurrent, not serialised


# ----------------------------------------------------------------------------- control & life


def test_control_endpoints(sim: Simulator, http: requests.Session) -> None:
    control = f"{sim.base_url}/_sim"
    spec = {"name": "ctl", "messages": 20, "delivered": 1.0, "not_delivered": 0.0,
            "send_spread": 0.0, "report_delay": 0.0}  # fmt: skip
    assert http.post(f"{control}/tag", json=spec, timeout=5).json()["ok"] is True
    assert page(http, sim, "ctl")["total"] == 20
    assert http.post(f"{control}/tag", json={"name": "x", "bogus": 1}, timeout=5).status_code == 400
    fault = {"tag": "ctl", "kind": "http_status", "status": 502}
    answer = http.post(f"{control}/fault", json=fault, timeout=5)
    assert answer.status_code == 200 and isinstance(answer.json()["id"], int)
    assert get(http, sim, tag="ctl").status_code == 502
    assert http.get(f"{control}/faults", timeout=5).json()["faults"][0]["status"] == 502
    assert http.post(f"{control}/clear-faults", timeout=5).json() == {"ok": True}
    assert get(http, sim, tag="ctl").status_code == 200
    assert http.post(f"{control}/advance", json={"seconds": 100}, timeout=5).json()["now"] == 100
    assert sim.now() == 100
    assert http.get(f"{control}/expected", params={"tag": "ctl"}, timeout=5).json() == {
        "statuses": {"Delivered": 20},
        "stop": 0,
        "total": 20,
    }
    stats = http.get(f"{control}/stats", timeout=5).json()
    assert stats["requests"] == 3 and stats["by_tag"] == {"ctl": 3}
    assert ["ctl", 1, 3] in stats["by_page"]
    messages = {"tag": "m", "messages": [{"phone": "+1", "status": "ko", "stop": False, "date": 5}]}
    assert http.post(f"{control}/messages", json=messages, timeout=5).status_code == 200
    assert page(http, sim, "m")["StatutResponse_List"][0]["status"] == "ko"
    assert http.post(f"{control}/reset-stats", timeout=5).status_code == 200
    assert sim.stats()["requests"] == 0
    sim.unfreeze()
    assert http.post(f"{control}/advance", json={"seconds": 1}, timeout=5).status_code == 409
    assert http.get(f"{control}/nope", timeout=5).status_code == 404
    assert http.get(f"{control}/tag", timeout=5).status_code == 405


def test_control_clock_and_tag_removal(sim: Simulator, http: requests.Session) -> None:
    control = f"{sim.base_url}/_sim"
    assert http.post(f"{control}/freeze", json={"at": 42.5}, timeout=5).json() == {
        "ok": True,
        "now": 42.5,
    }
    assert sim.frozen and sim.now() == 42.5
    answer = http.post(f"{control}/unfreeze", timeout=5).json()
    assert answer["ok"] is True and answer["now"] >= 42.5 and not sim.frozen
    assert http.post(f"{control}/freeze", timeout=5).json()["now"] >= 42.5  # at: now
    assert sim.frozen
    removed = http.post(f"{control}/remove-tag", json={"name": "other"}, timeout=5)
    assert removed.json() == {"ok": True} and sim.tags() == ["promo"]
    again = http.post(f"{control}/remove-tag", json={"name": "other"}, timeout=5)
    assert again.status_code == 404
    assert http.get(f"{control}/expected", params={"tag": "other"}, timeout=5).status_code == 404
    assert http.get(f"{control}/expected", timeout=5).status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"{", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"name": 5}', b'{"name": "x", "messages": "many"}'],
)
def test_control_rejects_a_bad_body_with_400(
    sim: Simulator, http: requests.Session, body: bytes
) -> None:
    answer = http.post(f"{sim.base_url}/_sim/tag", data=body, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["ok"] is False
    assert sim.stats()["errors"] == 0 and sim.tags() == ["promo", "other"]
    # the connection is still good for the API
    assert get(http, sim, tag="other").status_code == 200


def test_a_simulator_bug_is_a_500_counted_and_the_server_goes_on() -> None:
    broken = threading.Event()
    broken.set()

    def clock() -> float:
        if broken.is_set():
            broken.clear()
            raise ZeroDivisionError("a bug in the clock")
        return 0.0

    with Simulator(tags=[OTHER], clock=clock) as s, requests.Session() as session:
        answer = get(session, s, tag="other")
        assert answer.status_code == 500
        assert answer.json() == {"success": False, "code": 500, "message": "simulator bug"}
        stats = s.stats()
        assert stats["errors"] == 1 and stats["in_flight"] == 0
        assert stats["by_status"] == {}  # no answer of the API was written
        assert s.last_error is not None and "ZeroDivisionError" in s.last_error
        assert get(session, s, tag="other").status_code == 200


def test_stop_is_prompt_and_the_port_then_refuses(http: requests.Session) -> None:
    s = Simulator(tags=[OTHER]).start()
    assert get(http, s, tag="other").status_code == 200  # leaves an idle keep-alive connection
    s.set_fault(None, "delay", seconds=30)
    errors: list[Exception] = []

    def slow_request() -> None:
        try:
            get(requests.Session(), s, tag="other")
        except requests.RequestException as exc:
            errors.append(exc)

    slow = threading.Thread(target=slow_request)
    slow.start()
    time.sleep(0.2)
    began = time.monotonic()
    s.stop()
    assert time.monotonic() - began < 2
    slow.join(5)
    assert not slow.is_alive() and len(errors) == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/me", timeout=2)


def test_main_refuses_a_non_loopback_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--listen", "0.0.0.0:0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_command_line_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "smsp_exporter.simulator", "--listen", "127.0.0.1:0",
               "--tag", "cli:50", "--send-spread", "0", "--page-size", "20"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.fullmatch(
            r"simulator listening on (http://127\.0\.0\.1:\d+/v1) \(api key: sim-key\)\n", line
        )
        assert found, line
        response = requests.get(
            f"{found.group(1)}/bulk-status-by-tag",
            params={"apiKey": "sim-key", "tag": "cli", "page": 3},
            timeout=5,
        )
        assert response.json()["total"] == 50
        assert len(response.json()["StatutResponse_List"]) == 10
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_the_simulator_modules_use_only_each_others_public_names() -> None:
    """The parts talk through public hooks: no module reads another object's private attribute
    or imports another module's private name (the HTTP handler once called the Simulator's)."""
    package = Path(simulator_package.__file__).parent
    offences = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                owner = node.value
                mine = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                if not mine and not node.attr.startswith("__"):
                    offences.append(f"{path.name}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.level:
                offences += [
                    f"{path.name}:{node.lineno}: import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert offences == []


def test_long_lived_tags_and_listing_orders():
    from smsp_exporter.simulator import LISTING_ORDERS

    listings = {}
    for order in LISTING_ORDERS:
        spec = TagSpec("otp", 50, rate=1.0, start=-40, order=order, report_delay=5)
        with Simulator(tags=[spec], page_size=100) as s:
            s.freeze(at=0)
            doc = requests.get(
                f"{s.url}/bulk-status-by-tag", params={"apiKey": s.api_key, "tag": "otp"}, timeout=5
            ).json()
            assert doc["total"] == 41 == s.expected("otp")["total"]  # sent at -40..0
            listings[order] = doc["StatutResponse_List"]
    assert listings["newest"] == listings["oldest"][::-1]
    dates = [int(m["date"]) for m in listings["report"]]
    assert dates == sorted(dates, reverse=True)
    assert [int(m["date"]) for m in listings["report-oldest"]] == sorted(dates)
    assert sorted(map(str, listings["report"])) == sorted(map(str, listings["oldest"]))
