"""Text on the wire, as the compiler renders it (``chaperon.core.lang.render``): request
targets percent-encoded per RFC 3986, header values as UTF-8 with no control character, the
Host header in IDNA. The bytes a real server receives are in
``tests/engine/test_engine_wire_text.py``."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaperon.core.errors import InvalidArgument
from chaperon.core.lang.render import _host_header, percent_encode_target
from chaperon.core.loadtest import Target, load_test_from_dict
from chaperon.v1 import worker_pb2
from worker_service.plan import compile_assignment

UNRESERVED_AND_RESERVED = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?[]@!$&'()*+,;="
)


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("/caf\u00e9 menu?q=a b", "/caf%C3%A9%20menu?q=a%20b"),
        ("/a%2Fb%zz", "/a%2Fb%25zz"),  # a valid %XX stays, a stray % is encoded
        ("/100%", "/100%25"),
        ("/\x01\x7f\u0085", "/%01%7F%C2%85"),
        ("/a#b", "/a%23b"),  # from a config value: a literal '#' is refused earlier
        ("/\U0001f600", "/%F0%9F%98%80"),
        ("/" + UNRESERVED_AND_RESERVED, "/" + UNRESERVED_AND_RESERVED),
    ],
)
def test_targets_are_percent_encoded_as_rfc_3986_says(text: str, sent: str) -> None:
    assert percent_encode_target(text) == sent


@settings(max_examples=200, deadline=None, database=None)
@given(st.text())
def test_encoding_is_ascii_idempotent_and_decodes_back(text: str) -> None:
    sent = percent_encode_target(text)
    assert sent.isascii() and " " not in sent and "#" not in sent
    assert percent_encode_target(sent) == sent
    if "%" not in text:
        assert unquote(sent, errors="surrogatepass") == text


def test_the_host_header_holds_the_idna_form() -> None:
    assert _host_header(Target("http", "b\u00fccher.example", 8080, "")) == (
        b"xn--bcher-kva.example:8080"
    )
    assert _host_header(Target("http", "::1", 80, "")) == b"[::1]"


def _compile(lt: dict[str, Any]) -> Any:
    assignment = worker_pb2.Assignment(
        assignment_id="a",
        load_test=load_test_from_dict(lt),
        shares=[worker_pb2.EntryShare(entry_index=0, sessions=1)],
    )
    (plan,) = compile_assignment(assignment)
    return plan


def test_a_header_value_from_a_run_scenario_config_is_checked_when_rendered() -> None:
    # The named scenario is checked where it is written (token is fine there); the config its
    # caller gives is only met when the step is rendered inline.
    get = {"http": {"method": "GET", "path": "/", "headers": {"X-Token": "{{token}}"}}}
    lt = {
        "name": "t",
        "config": {"base_url": "http://127.0.0.1:9", "token": "ok"},
        "scenarios": [
            {
                "concurrency": 1,
                "sequence": {
                    "scenarios": [
                        {
                            "name": "caller",
                            "run": [
                                {
                                    "run_scenario": {
                                        "name": "callee",
                                        "config": {"token": "x\r\nX-Injected: 1"},
                                    }
                                }
                            ],
                        },
                        {"name": "callee", "run": [get]},
                    ]
                },
            }
        ],
    }
    with pytest.raises(InvalidArgument) as info:
        _compile(lt)
    ((field, what),) = info.value.violations
    assert field.endswith("run_scenario(name=callee).run[0].http.headers[X-Token]")
    assert "control characters" in what
