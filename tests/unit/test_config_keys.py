"""A misspelt config key is refused, naming the key meant; a key of the user's never is.

The master's check (``validate_load_test``, what a ``grpcurl`` submission meets) and a
worker's (``check_entries``) apply the same rule to the load test's config, an entry's and a
``run_scenario``'s; the CLI gives the violation its line in the file.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from support.loadtests import minimal_load_test

from chaperon.core.errors import InvalidArgument
from chaperon.core.lang import check_entries
from chaperon.core.lang.config import CONFIG_KEYS
from chaperon.core.loadtest import load_test_from_dict
from master_service.validation import validate_load_test

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = minimal_load_test("http://127.0.0.1:8080", concurrency=1, duration="1s")


def _refusals(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(load_test_from_dict(data))
    return info.value.violations


def _with(config: dict[str, Any], entry_config: dict[str, Any] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["config"].update(config)
    if entry_config is not None:
        data["scenarios"][0]["config"] = entry_config
    return data


def test_a_misspelt_option_is_refused_with_the_option_meant() -> None:
    assert _refusals(_with({"request_timout": "5s"})) == [
        ("config.request_timout", "unknown config key (did you mean 'request_timeout'?)")
    ]


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("conect_timeout", "connect_timeout"),
        ("reqeust_timeout", "request_timeout"),  # two letters swapped: one edit
        ("base_ulr", "base_url"),
        ("baseUrl", "base_url"),
        ("Base_URL", "base_url"),
        ("cookie", "cookies"),
        ("max_captur", "max_capture"),
        ("metrics_filters", "metrics_filter"),
        ("metrics_strip_qeury", "metrics_strip_query"),
        ("tls_insecur", "tls_insecure"),
        ("tls_ca_fil", "tls_ca_file"),
    ],
)
def test_every_option_is_known(key: str, meant: str) -> None:
    ((field, what),) = _refusals(_with({key: "x"}))
    assert field == f"config.{key}"
    assert what == f"unknown config key (did you mean {meant!r}?)"


def test_an_entrys_and_a_run_scenarios_config_are_checked_too() -> None:
    data = _with({}, {"request_timout": "1s"})
    data["scenarios"][0]["scenario"]["run"].append(
        {"run_scenario": {"scenario": {"name": "in", "run": [{"delay": {"duration": "1ms"}}]},
                          "config": {"conect_timeout": "1s"}}}
    )  # fmt: skip
    assert _refusals(data) == [
        ("scenarios[0].config.request_timout",
         "unknown config key (did you mean 'request_timeout'?)"),
        ("scenarios[0].scenario.run[1].run_scenario.config.conect_timeout",
         "unknown config key (did you mean 'connect_timeout'?)"),
    ]  # fmt: skip


def test_a_key_a_template_reads_is_the_users_whatever_its_spelling() -> None:
    data = _with({"cookie": "abc", "base_urls": {"x": "y"}})
    data["scenarios"][0]["scenario"]["run"][0]["http"]["headers"] = {
        "Cookie": "{{ cookie }}",
        "X-Y": "{{base_urls.x}}",
    }
    validate_load_test(load_test_from_dict(data))


def test_keys_far_from_every_option_and_nested_keys_are_the_users() -> None:
    validate_load_test(load_test_from_dict(_with({"user": "bob", "auth": {"cookie": "x"}})))


def test_the_worker_refuses_it_as_the_master_does() -> None:
    lt = load_test_from_dict(_with({"request_timout": "5s"}))
    with pytest.raises(InvalidArgument) as info:
        check_entries(lt, [0])
    assert ("config.request_timout", "unknown config key (did you mean 'request_timeout'?)") in (
        info.value.violations
    )


def test_the_options_are_the_keys_the_compiler_reads_and_the_docs_list() -> None:
    # Every config key the compiler's modules read is an option, and every option is documented.
    source = "".join(p.read_text() for p in (ROOT / "chaperon/core/lang").glob("*.py"))
    read = set(re.findall(r"config\.get\(\s*\"(\w+)\"", source))
    read |= set(re.findall(r"_config_duration\(\s*config,\s*\"(\w+)\"", source))
    assert read <= set(CONFIG_KEYS), read - set(CONFIG_KEYS)
    language = (ROOT / "docs/language.md").read_text()
    assert [k for k in CONFIG_KEYS if f"config.{k}" not in language] == []
