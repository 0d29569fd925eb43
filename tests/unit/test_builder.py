"""The Python builder gives the same messages as the JSON form, and validates at the master."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.loadtests import minimal_load_test

from chaperon import LoadTest, Scenario, load_file, load_test_from_dict
from master_service.validation import validate_load_test


def test_builder_equals_the_minimal_json_form() -> None:
    built = (
        LoadTest("smoke", base_url="http://127.0.0.1:8080")
        .add(Scenario("root").get("/"), concurrency=50, duration="5s")
        .to_proto()
    )
    expected = load_test_from_dict(
        minimal_load_test("http://127.0.0.1:8080", concurrency=50, duration="5s")
    )
    assert built == expected


def test_every_step_and_option() -> None:
    s = (
        Scenario("all")
        .get("/a", headers={"X": "1"}, query={"q": 2})
        .post("/login", json={"user": "u"}, metric="login")
        .put("/p", body="raw")
        .patch("/f", form={"k": 1})
        .delete("http://127.0.0.1:9/abs")
        .delay("10ms")
    )
    lt = (
        LoadTest(
            "x",
            base_url="http://127.0.0.1:8080",
            config={"request_timeout": "2s"},
            timeout="1m",
            tag="ci",
        )
        .add(s, concurrency=2, iterations=3)
        .add(s, arrival_rate=10, stages=[("1s", 20)], max_sessions=50)
        .threshold("login", "p99", 250)
    )
    msg = lt.to_proto()
    run = msg.scenarios[0].scenario.run
    assert [step.WhichOneof("action") for step in run] == ["http"] * 5 + ["delay"]
    assert run[0].http.query["q"] == "2" and run[0].http.headers["X"] == "1"
    assert run[1].http.metric == "login" and run[1].http.json.struct_value["user"] == "u"
    assert run[3].http.form.fields["k"] == "1"
    assert run[4].http.url == "http://127.0.0.1:9/abs"
    assert msg.scenarios[1].arrival_rate.stages[0].target == 20
    assert msg.thresholds[0].max == 250 and msg.timeout == "1m" and msg.tag == "ci"
    validate_load_test(msg)


def test_builders_are_immutable() -> None:
    base = Scenario("s").get("/")
    longer = base.delay("1s")
    assert len(base.steps) == 1 and len(longer.steps) == 2


def test_one_payload_only() -> None:
    with pytest.raises(ValueError, match="one of body, json or form"):
        Scenario("s").post("/", json={}, body="x")


def test_chaperon_run_takes_a_script(tmp_path: Path) -> None:
    script = tmp_path / "lt.py"
    script.write_text(
        "from chaperon import LoadTest, Scenario\n"
        "load_test = LoadTest('py', base_url='http://127.0.0.1:1')"
        ".add(Scenario('s').get('/'), concurrency=1)\n"
    )
    assert load_file(str(script)).name == "py"
    (tmp_path / "same.json").write_text(
        json.dumps(
            {
                "name": "py",
                "config": {"base_url": "http://127.0.0.1:1"},
                "scenarios": [
                    {
                        "concurrency": 1,
                        "scenario": {
                            "name": "s",
                            "run": [{"http": {"method": "GET", "path": "/"}}],
                        },
                    }
                ],
            }
        )
    )
    assert load_file(str(script)) == load_file(str(tmp_path / "same.json"))


def test_control_flow_builders() -> None:
    body = Scenario("b").get("/")
    s = (
        Scenario("s")
        .repeat(3, body)
        .repeat_traced(2, body, metric="two gets")
        .loop("1s", body.delay("10ms"))
        .random_delay("20ms", "5ms")
    )
    lt = LoadTest("x", base_url="http://127.0.0.1:1").add(s, concurrency=1).to_proto()
    run = lt.scenarios[0].scenario.run
    assert run[0].repeat.count == 3 and len(run[0].repeat.steps) == 1
    assert run[1].repeat.traced and run[1].repeat.metric == "two gets"
    assert run[2].loop.duration == "1s" and len(run[2].loop.steps) == 2
    assert (run[3].random_delay.min, run[3].random_delay.max) == ("5ms", "20ms")
    validate_load_test(lt)
