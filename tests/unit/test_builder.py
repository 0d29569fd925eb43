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


def test_session_language_builders() -> None:
    from google.protobuf import json_format

    from chaperon import header, json_path, regex, response_body, status_code

    child = Scenario().signal_parent("ready").await_signal("go", timeout="1s")
    s = (
        Scenario("all")
        .init(Scenario().assign(user="u{{session_id}}", n=1))
        .post("/login", json={"user": "{{user}}"}, auth=("a", "b"), extract=[status_code("st")])
        .extract(json_path("token", "$.token"), regex("id", "id=([0-9]+)", optional=True))
        .extract(loc="$.location")
        .get("/me", headers={"Authorization": "Bearer {{token}}"})
        .put("/b", body="x", extract=[header("h", "ETag"), response_body("raw")])
        .ws_connect("/ws", conn="chat", headers={"X": "1"})
        .ws_send("hi {{token}}", conn="chat")
        .ws_send(b"\x00\x01", conn="chat")
        .ws_send(json={"t": 1}, conn="chat", metric="json send")
        .ws_recv(conn="chat", timeout="2s", assign="msg")
        .ws_await_recv("hi", conn="chat", timeout="1s")
        .ws_close(conn="chat")
        .async_("kid", child)
        .async_("named", "other")
        .await_signal("ready")
        .signal("kid", "go")
        .await_("kid", timeout="5s")
        .await_all(timeout="10s")
        .cc_spread(4, "100ms", Scenario().get("/spread"))
        .run_scenario("other", config={"k": "v"})
        .run_scenario(Scenario("inline").get("/i"))
        .update_assign("n", add=2)
        .update_assign("m", set="{{n}}")
        .delete_assign("m", "n")
        .retry_on_error(3, "10ms", Scenario().get("/flaky"))
        .add_metric("size", 5)
        .add_metric("count", var="n")
        .call_traced("group", [Scenario().get("/a"), {"delay": {"duration": "1ms"}}])
        .python("hooks:f", metric="hook")
        .abort("bye")
        .teardown(Scenario().post("/logout"))
    )
    other = Scenario("other").get("/o")
    lt = (
        LoadTest("x", base_url="http://127.0.0.1:8080", config={"cookies": True})
        .add(s, concurrency=2, session_name="main", scenario_timeout="1m", delay="1s")
        .add([other, Scenario("then").get("/t")], concurrency=1)
        .add(other, concurrency=1)
    )
    msg = lt.to_proto()
    entry = msg.scenarios[0]
    assert entry.session_name == "main" and entry.scenario_timeout == "1m"
    assert entry.scenario.init[0].assign.values["n"] == "1"
    assert entry.scenario.teardown[0].http.path == "/logout"
    run = entry.scenario.run
    login = run[0].http
    assert login.basic_auth.username == "a" and login.json.struct_value["user"] == "{{user}}"
    assert [e.WhichOneof("source") for e in login.extract] == [
        "status",
        "json_path",
        "regex",
        "json_path",
    ]
    assert login.extract[2].optional and login.extract[3].var == "loc"
    assert run[5].ws_send.binary == b"\x00\x01" and run[6].ws_send.metric == "json send"
    assert run[7].ws_recv.assign == "msg"
    assert getattr(run[10], "async").steps[0].signal_parent.value == "ready"
    assert getattr(run[11], "async").scenario == "other"
    assert getattr(run[14], "await").timeout == "5s"
    assert run[16].cc_spread.rate == 4 and run[16].cc_spread.steps[0].http.path == "/spread"
    assert run[17].run_scenario.name == "other"
    assert json_format.MessageToDict(run[17].run_scenario.config) == {"k": "v"}
    assert run[18].run_scenario.scenario.run[0].http.path == "/i"
    assert run[19].update_assign.add == 2 and run[20].update_assign.set == "{{n}}"
    assert list(run[21].delete_assign.names) == ["m", "n"]
    assert run[22].retry_on_error.retries == 3 and run[22].retry_on_error.backoff == "10ms"
    assert run[23].add_metric.value == 5 and run[24].add_metric.var == "n"
    assert [st.WhichOneof("action") for st in run[25].call_traced.steps] == ["http", "delay"]
    assert run[26].python.function == "hooks:f" and run[27].abort.reason == "bye"
    seq = msg.scenarios[1].sequence
    assert [sc.name for sc in seq.scenarios] == ["other", "then"]
    validate_load_test(msg)


def test_builder_mistakes_are_caught_early() -> None:
    with pytest.raises(ValueError, match="follows an HTTP request"):
        Scenario().delay("1s").extract(t="$.t")
    with pytest.raises(ValueError, match="add or set"):
        Scenario().update_assign("n")
    with pytest.raises(ValueError, match="value or var"):
        Scenario().add_metric("k")
    with pytest.raises(ValueError, match="text"):
        Scenario().ws_send()
    with pytest.raises(ValueError, match="scenario or sequence"):
        LoadTest("x").add()
