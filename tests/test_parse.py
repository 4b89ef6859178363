"""The response parser: counts, validation, error bodies."""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsp_exporter.errors import ApiCodeError, InvalidResponse
from smsp_exporter.parse import parse_page, parse_page_reference


def body(messages, **fields) -> bytes:
    doc = {"success": True, "code": 200, "currentPage": 1, "total": len(messages)}
    doc.update(fields)
    doc["StatutResponse_List"] = messages
    return json.dumps(doc).encode()


def msg(status="Delivered", stop=False, date="1517989111", phone="+33611111111"):
    return {"phoneNumber": phone, "status": status, "stopSMS": stop, "date": date}


def test_counts_statuses_stop_and_dates():
    page = parse_page(
        body(
            [
                msg("Delivered", date="100"),
                msg("Delivered", stop=True, date="300"),
                msg("Not delivered", date="200"),
                msg("Waiting", date="50"),
                msg("Waiting", date="70"),
                msg("ko", date="10"),
            ]
        )
    )
    assert dict(page.statuses) == {"Delivered": 2, "Not delivered": 1, "Waiting": 2, "ko": 1}
    assert page.stop == 1
    assert page.items == 6
    assert page.total == 6
    assert page.current_page == 1
    assert page.oldest_waiting == 50
    assert page.newest == 300


def test_documented_sample_parses():
    sample = (
        b'{"success": true, "code": 200, "currentPage": 1, "total": 2, "StatutResponse_List": ['
        b'{"phoneNumber": "+336XXXXXXX1", "status": "Delivered", "stopSMS": false, '
        b'"date": "1517989111"}, {"phoneNumber": "+336XXXXXXX2", "status": "Delivered", '
        b'"stopSMS": false, "date": "1517989101"}]}'
    )
    page = parse_page(sample)
    assert dict(page.statuses) == {"Delivered": 2}
    assert page.newest == 1517989111


@pytest.mark.parametrize("code", [1, 3, 10, 20, 30, 40, 96, 555])
def test_error_codes_become_typed_errors(code):
    raw = json.dumps({"success": False, "code": code, "message": "Clé API incorrecte"}).encode()
    with pytest.raises(ApiCodeError) as info:
        parse_page(raw)
    assert info.value.code == code
    # An undocumented code shares one reason (a bounded label), its message still says which.
    assert info.value.reason == (f"api_code_{code}" if code != 555 else "api_code_other")
    assert str(code) in str(info.value)


def test_code_10_message_is_english_and_actionable():
    raw = b'{"success": false, "code": 10, "message": "Cl\\u00e9 API incorrecte"}'
    with pytest.raises(ApiCodeError, match="API key was rejected"):
        parse_page(raw)


@pytest.mark.parametrize(
    "said",
    [
        "Numéro +33612345678 invalide",
        "Numéro 06 12 34 56 78 invalide",
        "Clé API sk-LEAKCANARY-7f3a9c2e5b1d4f60 incorrecte",
        "Clé API abcdefghijklmnopqrstuvwxyzabcdef incorrecte",
    ],
)
def test_the_apis_own_message_never_carries_a_number_or_a_key_into_the_error(said):
    raw = json.dumps({"success": False, "code": 555, "message": said}).encode()
    with pytest.raises(ApiCodeError) as info:
        parse_page(raw)
    text = str(info.value) + info.value.api_message
    for secret in ("12345678", "12 34 56", "LEAKCANARY", "abcdefghijklmnopqrstuvwxyz"):
        assert secret not in text
    assert "invalide" in text or "incorrecte" in text  # the rest of the message is kept


def test_not_found_is_an_empty_tag():
    page = parse_page(b'{"success": false, "code": 4, "message": "Message introuvable"}')
    assert page.items == 0 and page.total == 0 and dict(page.statuses) == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"success": true, "code": 200, "total": 2, "StatutResponse_List": [',
        b"[]",
        b'{"code": 200}',
        body([msg()], total=-1),
        body([msg()], total=10**15),
        body([{"phoneNumber": "+33611111111", "stopSMS": False, "date": "1"}]),
        body([msg(status="")]),
        body([msg(status=3)]),
        body([msg(status=None)]),
        body([msg(status=["Delivered"])]),
        body([{**msg(status=None), "statut": "Delivered"}]),  # `status` wins, even when null
        body([msg()], success="yes"),
        body([msg()], success=2),
        body([msg()], success=None),
        body(["not an object"]),
        json.dumps({"success": True, "code": 200, "total": 3}).encode(),
        json.dumps({"success": True, "code": 200, "total": 3, "StatutResponse_List": {}}).encode(),
        body([msg()], currentPage=0),
    ],
)
def test_broken_answers_are_invalid_response(raw):
    with pytest.raises(InvalidResponse):
        parse_page(raw)


def test_invalid_response_never_quotes_phone_numbers():
    with pytest.raises(InvalidResponse) as info:
        parse_page(body([msg(status=7, phone="+33699999999")]))
    assert "+33699999999" not in str(info.value)


@pytest.mark.parametrize("parse", [parse_page, parse_page_reference])
@pytest.mark.parametrize(
    "status",
    [b'"Deliv\\ud800ered"', b'"\\udc00"', b'"Deliv\xed\xa0\x80ered"'],
    ids=["escaped-high", "escaped-low", "encoded-surrogate"],
)
def test_a_status_that_is_not_valid_unicode_is_invalid_response(parse, status):
    # JSON allows a lone surrogate escape; as a label value it made the whole /metrics
    # exposition fail (UnicodeEncodeError), every tag with it.
    raw = body([msg(status="PLACEHOLDER")]).replace(b'"PLACEHOLDER"', status)
    with pytest.raises(InvalidResponse):
        parse(raw)


def test_a_status_in_any_valid_unicode_is_counted():
    raw = body([msg(status="Délivré \U0001f600")]).replace(b"\\u00e9", "é".encode())
    for parse in (parse_page, parse_page_reference):
        assert dict(parse(raw).statuses) == {"Délivré \U0001f600": 1}


@pytest.mark.parametrize("junk", [b"\xff", b"\xed\xa0\x80", b"\xc3"])
def test_bytes_that_are_not_utf8_in_a_field_nobody_reads_agree(junk):
    # msgspec skips phoneNumber without checking its UTF-8; the two paths must still agree
    # (and the fast path must raise InvalidResponse, not UnicodeDecodeError).
    raw = body([msg(phone="PLACEHOLDER")]).replace(b"PLACEHOLDER", b"+336" + junk)
    assert outcome(parse_page, raw) == outcome(parse_page_reference, raw)


def test_same_content_same_fingerprint_different_content_differs():
    a = parse_page(body([msg(date="1"), msg(date="2")]))
    b = parse_page(body([msg(date="1"), msg(date="2")], currentPage=2))
    c = parse_page(body([msg(date="3"), msg(date="4")], currentPage=2))
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(st.text(max_size=5), json_values),
        "stopSMS": st.one_of(st.booleans(), json_values),
        "date": st.one_of(st.integers(), st.text(max_size=12), json_values),
        "phoneNumber": st.text(max_size=12),
    },
)
answer_like = st.fixed_dictionaries(
    {},
    optional={
        "success": st.one_of(st.booleans(), json_values),
        "code": st.one_of(st.sampled_from([200, 4, 10]), json_values),
        "currentPage": json_values,
        "total": st.one_of(st.integers(), json_values),
        "StatutResponse_List": st.one_of(st.lists(message_like, max_size=5), json_values),
        "message": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(answer_like, json_values))
def test_any_json_gives_a_page_or_a_typed_error(doc):
    try:
        page = parse_page(json.dumps(doc).encode())
    except (InvalidResponse, ApiCodeError):
        return
    assert page.items >= 0
    assert sum(page.statuses.values()) == page.items


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_a_page_or_a_typed_error(raw):
    with contextlib.suppress(InvalidResponse, ApiCodeError):
        parse_page(raw)


# Answers close to valid ones, so that the fast path (msgspec) is taken as often as not.
near_message = st.fixed_dictionaries(
    {
        "status": st.one_of(
            st.sampled_from(["Delivered", "Not delivered", "Waiting", "ko", ""]),
            st.text(min_size=60, max_size=70),
            st.integers(),
        ),
        "stopSMS": st.one_of(
            st.booleans(),
            st.sampled_from(["false", "TRUE", "1", "0", "", "oui", 0, 1, 2, -1, 300, 1.0, None]),
            st.integers(),
        ),
        "date": st.one_of(
            st.from_regex(r"[0-9]{0,14}", fullmatch=True),
            st.integers(-5, 10**14),
            st.integers(),
            st.floats(),
            st.sampled_from(["١٢٣", "²", " 12", "+12", "1_0", "12.5", "", None, "0000-00-00"]),
            st.sampled_from(["2018-02-07 20:38:31", "2018-02-07T19:38:31Z", "2018-10-28 02:30"]),
            st.sampled_from(
                ["2018-02-07T19:38:31+25:00", "9999-12-31T23:59:59-23:59", "0001-01-01"]
            ),
        ),
    },
    optional={"phoneNumber": st.text(max_size=12)},
).flatmap(
    # Some messages spell the status `statut`, or leave out the secondary fields.
    lambda m: st.sampled_from(
        [
            m,
            {("statut" if k == "status" else k): v for k, v in m.items()},
            {k: v for k, v in m.items() if k != "date"},
            {k: v for k, v in m.items() if k != "stopSMS"},
        ]
    )
)
near_answer = st.fixed_dictionaries(
    {
        "success": st.one_of(st.just(True), st.booleans(), st.sampled_from(["true", 1, "1", "0"])),
        "StatutResponse_List": st.one_of(st.lists(near_message, max_size=8), json_values),
    },
    optional={
        "code": st.sampled_from([200, "200", 4, 10, 200.0, None]),
        "currentPage": st.one_of(st.integers(-1, 5), st.sampled_from(["2", "x"])),
        "total": st.one_of(st.integers(-1, 20), st.sampled_from(["3", None, 10**15])),
    },
)

valid_answer = st.builds(
    lambda messages, total: body(messages, total=total if total is not None else len(messages)),
    st.lists(
        st.builds(
            msg,
            status=st.sampled_from(["Delivered", "Not delivered", "Waiting", "DELIVRD"]),
            stop=st.booleans(),
            date=st.from_regex(r"[0-9]{1,12}", fullmatch=True),
        ),
        max_size=20,
    ),
    st.one_of(st.none(), st.integers(0, 40)),
)


def outcome(parse, raw: bytes):
    try:
        page = parse(raw)
    except (InvalidResponse, ApiCodeError) as err:
        return type(err), getattr(err, "code", None)
    return (
        page.current_page,
        page.total,
        page.items,
        dict(page.statuses),
        page.stop,
        page.oldest_waiting,
        page.newest,
        page.waiting_dates,
        page.waiting_unknown,
        dict(page.unreadable),
        page.content_key,
        page.first_date,
        page.last_date,
    )


# Bodies that are not plain ASCII: raw UTF-8 (ensure_ascii=False), lone surrogates, as escapes or
# as their (invalid) UTF-8 bytes, in the status and in the skipped phone number.
unicode_answer = st.builds(
    lambda messages, escape: json.dumps(
        {"success": True, "code": 200, "total": len(messages), "StatutResponse_List": messages},
        ensure_ascii=escape,
    ).encode("utf-8", "surrogatepass"),
    st.lists(
        st.builds(
            msg,
            status=st.text(st.characters(codec=None), min_size=1, max_size=4)
            | st.sampled_from(["Delivered", "\ud800", "x\udfff"]),
            phone=st.text(max_size=4) | st.just("+336\ud83d"),
        ),
        max_size=4,
    ),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        valid_answer,
        near_answer.map(json.dumps),
        answer_like.map(json.dumps),
        unicode_answer,
    )
)
def test_fast_path_agrees_with_the_reference_parser(raw):
    raw = raw if isinstance(raw, bytes) else raw.encode()
    assert outcome(parse_page, raw) == outcome(parse_page_reference, raw)


def test_a_large_page_of_mixed_date_lengths():
    messages = [msg("Waiting", date="99"), msg("Delivered", date="100"), msg("Waiting", date="7")]
    page = parse_page(body(messages * 1000))
    assert page.newest == 100 and page.oldest_waiting == 7
    assert dict(page.statuses) == {"Waiting": 2000, "Delivered": 1000}


def test_waiting_dates_first_and_last_dates():
    messages = [
        msg("Waiting", date="300"),
        msg("Delivered", date="100"),
        msg("Waiting", date="20"),
        msg("Waiting", date="300"),
        msg("Not delivered", date="250"),
    ]
    for parse in (parse_page, parse_page_reference):
        page = parse(body(messages))
        assert page.waiting_dates == (20, 300, 300)
        assert page.waiting_unknown == 0
        assert dict(page.unreadable) == {}
        assert (page.first_date, page.last_date) == (300, 250)
        assert page.oldest_waiting == 20 and page.newest == 300


def test_a_page_without_messages_has_no_dates_and_key_zero():
    for raw in (body([]), b'{"success": false, "code": 4, "message": "Message introuvable"}'):
        for parse in (parse_page, parse_page_reference):
            page = parse(raw)
            assert page.waiting_dates == () and page.content_key == 0
            assert page.first_date is None and page.last_date is None


def key(messages, **fields) -> int:
    fast, reference = parse_page(body(messages, **fields)), parse_page_reference(body(messages))
    assert fast.content_key == reference.content_key
    return fast.content_key


def test_content_key_ignores_phone_numbers_and_the_header():
    a = [msg("Delivered", date="100", phone="+33600000001"), msg("Waiting", date="200")]
    b = [msg("Delivered", date="100", phone="+33699999999"), msg("Waiting", date="200", phone="")]
    assert key(a) == key(b) == key(a, currentPage=7, total=900)


@pytest.mark.parametrize(
    "changed",
    [
        [msg("Delivered", date="100"), msg("Delivered", date="200")],  # a status
        [msg("Waiting", date="200"), msg("Delivered", date="100")],  # the order
        [msg("Delivered", date="100", stop=True), msg("Waiting", date="200")],  # a STOP
        [msg("Delivered", date="101"), msg("Waiting", date="200")],  # a date
        [msg("Delivered", date="1002"), msg("Waiting", date="00")],  # a date's digits moved
        [msg("Delivered", date="100")],  # a message less
        [msg("Delivered", date="100"), msg("Waiting", date="200"), msg("Waiting", date="200")],
    ],
)
def test_content_key_changes_with_the_content(changed):
    assert key(changed) != key([msg("Delivered", date="100"), msg("Waiting", date="200")])


def test_content_key_is_not_fooled_by_separators_inside_statuses():
    pairs = [
        ([msg("a\x00b"), msg("c")], [msg("a"), msg("b\x00c")]),
        ([msg("a\x01\x02b"), msg("c")], [msg("a\x00b"), msg("c")]),
        ([msg("a\x00")], [msg("a\x01\x02")]),
    ]
    for left, right in pairs:
        assert key(left) != key(right)


def test_content_key_is_the_same_whichever_path_reads_the_page():
    documented = [msg("Delivered", date="1517989111"), msg("Waiting", date="1517989101")]
    as_numbers = [msg("Delivered", date=1517989111), msg("Waiting", date=1517989101)]
    assert key(documented) == key(as_numbers)  # the second is read by the reference path


def test_content_key_is_stable_across_processes_and_fits_sqlite():
    # Kept in a state file: Python's salted hash() would change at every restart.
    raw = body([msg("Delivered", date="100"), msg("Waiting", date="200", stop=True)])
    script = (
        "import sys; from smsp_exporter.parse import parse_page; "
        "print(parse_page(sys.stdin.buffer.read()).content_key)"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            input=raw,
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert seen == {str(parse_page(raw).content_key).encode()}
    big = [msg(date=str(n)) for n in range(1, 200)]
    assert all(-(2**63) <= key(big[:n]) < 2**63 for n in range(1, 200))


# -- tolerant where nothing is counted: stopSMS and date -------------------------------------

PARIS_WINTER = calendar.timegm((2018, 2, 7, 19, 38, 31))  # 20:38:31 in Paris, UTC+1
PARIS_SUMMER = calendar.timegm((2018, 7, 7, 18, 38, 31))  # 20:38:31 in Paris, UTC+2


@pytest.mark.parametrize(
    ("date", "seconds"),
    [
        ("1517989111", 1517989111),
        (1517989111, 1517989111),
        (1517989111.75, 1517989111),
        ("1517989111000", 1517989111),  # milliseconds
        (1517989111999, 1517989111),
        ("01517989111", 1517989111),
        ("2018-02-07 20:38:31", PARIS_WINTER),  # the API's other format: Paris time
        ("2018-07-07 20:38:31", PARIS_SUMMER),
        ("2018-02-07T20:38:31", PARIS_WINTER),
        ("2018-02-07T19:38:31Z", PARIS_WINTER),
        ("2018-02-07T19:38:31.250Z", PARIS_WINTER),
        ("2018-02-07T21:38:31+02:00", PARIS_WINTER),
        ("2018-07-07T18:38:31+00:00", PARIS_SUMMER),
        (None, None),
        ("", None),
        ("0", None),
        (0, None),
        (-5, None),
        ("0000-00-00 00:00:00", None),  # MySQL's "no date"
        ("yesterday", None),
        ("1517989111.5", None),
        ("١٥١٧٩٨٩١١١", None),
        ("99999999999999", None),
        (10**30, None),
        (float("nan"), None),
        (True, None),
        ([1517989111], None),
        ({"sec": 1}, None),
        ("2018-02-07 20:38:31" + " " * 40, None),
    ],
)
def test_dates_in_every_encoding_and_unknown_ones(date, seconds):
    raw = body([msg("Waiting", date=date), msg("Delivered", date="1000")]).replace(b"NaN", b"1e999")
    for parse in (parse_page, parse_page_reference):
        page = parse(raw)
        assert dict(page.statuses) == {"Waiting": 1, "Delivered": 1}  # always counted
        assert page.first_date == seconds
        if seconds is None:
            assert page.waiting_dates == () and page.oldest_waiting is None
            assert page.waiting_unknown == 1
            assert dict(page.unreadable) == {"date": 1}
            assert page.newest == 1000
        else:
            assert page.waiting_dates == (seconds,) and page.oldest_waiting == seconds
            assert page.waiting_unknown == 0 and dict(page.unreadable) == {}


def test_a_missing_date_is_unknown():
    message = msg("Waiting")
    del message["date"]
    for parse in (parse_page, parse_page_reference):
        page = parse(body([message]))
        assert page.waiting_unknown == 1 and dict(page.unreadable) == {"date": 1}


@pytest.mark.parametrize(
    ("stop", "counted"),
    [
        (True, 1),
        (False, 0),
        (1, 1),
        (0, 0),
        ("1", 1),
        ("0", 0),
        ("true", 1),
        ("false", 0),
        ("TRUE", 1),
        ("False", 0),
        (None, None),
        ("", None),
        (2, None),
        (-1, None),
        (1.0, None),
        ("yes", None),
        ([True], None),
    ],
)
def test_stop_in_every_encoding_and_unknown_ones(stop, counted):
    raw = body([msg("Delivered", stop=stop), msg("Delivered", stop=True)])
    for parse in (parse_page, parse_page_reference):
        page = parse(raw)
        assert dict(page.statuses) == {"Delivered": 2}
        assert page.stop == 1 + (counted or 0)
        assert dict(page.unreadable) == ({} if counted is not None else {"stopSMS": 1})


def test_a_missing_stop_is_unknown():
    message = msg()
    del message["stopSMS"]
    for parse in (parse_page, parse_page_reference):
        page = parse(body([message, msg(stop=True)]))
        assert page.stop == 1 and dict(page.unreadable) == {"stopSMS": 1}


def test_unknown_values_change_the_content_key():
    known = key([msg("Waiting", date="100", stop=False)])
    assert key([msg("Waiting", date=None, stop=False)]) != known
    assert key([msg("Waiting", date="100", stop=None)]) != known
    # ...and unknown is unknown, however it was written.
    assert key([msg("Waiting", date=None, stop="")]) == key([msg("Waiting", date="", stop=None)])


@pytest.mark.parametrize("success", [True, "true", "TRUE", 1, "1"])
@pytest.mark.parametrize("code", [200, "200", None])
def test_success_in_every_encoding(success, code):
    raw = body([msg()], success=success, code=code)
    for parse in (parse_page, parse_page_reference):
        assert dict(parse(raw).statuses) == {"Delivered": 1}


@pytest.mark.parametrize("success", [False, "false", 0, "0"])
def test_failure_in_every_encoding(success):
    raw = json.dumps({"success": success, "code": "10", "message": "Clé API incorrecte"}).encode()
    for parse in (parse_page, parse_page_reference):
        with pytest.raises(ApiCodeError) as info:
            parse(raw)
        assert info.value.code == 10


def test_the_status_spelled_statut():
    messages = [{"phoneNumber": "+33611111111", "statut": "Delivered", "stopSMS": 0, "date": "1"}]
    messages.append(msg("Waiting", date="5"))
    for parse in (parse_page, parse_page_reference):
        assert dict(parse(body(messages)).statuses) == {"Delivered": 1, "Waiting": 1}
