"""The complete example of docs/language.md, section 6, built with the Python builder.

Run it with ``chaperon run examples/stateful.py`` against
``python -m tests.support.lang_server --port 8080``.
"""

from chaperon import LoadTest, Scenario, json_path

bearer = {"Authorization": "Bearer {{token}}"}
echo = (
    Scenario()
    .ws_connect("/ws")
    .ws_send("hello {{item_name}}")
    .ws_await_recv("hello {{item_name}}", timeout="2s")
    .ws_close()
)
watcher = (
    Scenario()
    .await_signal("go", timeout="5s")
    .get("/me", headers=bearer, metric="GET /me (child)")
    .signal_parent("done")
)
shopper = (
    Scenario("shopper")
    .init(Scenario().post("/login", json={"user": "user{{session_id}}"}).extract(token="$.token"))
    .get("/me", headers=bearer)
    .get("/cookie")
    .assign(item="{{iteration}}")
    .get("/items/{{item}}", extract=[json_path("item_name", "$.name")])
    .call_traced("ws echo", echo)
    .async_("watcher", watcher)
    .signal("watcher", "go")
    .await_signal("done", timeout="5s")
    .await_("watcher", timeout="5s")
)
load_test = LoadTest(
    "stateful",
    base_url="http://127.0.0.1:8080",
    config={"cookies": True, "request_timeout": "5s"},
).add(shopper, session_name="shopper", concurrency=10, iterations=2)
