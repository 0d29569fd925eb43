"""HTTP requests and WebSocket handshakes rendered for the engine, once, at plan time.

An HTTP step becomes either a plain op (``PlanBuilder.http``: target, metric, the request's
exact bytes) when everything in it is known now (config values included) and it neither
extracts nor keeps cookies, or a templated one (``PlanBuilder.http_template``): the head is
the request line and header lines as a template (each line ending CRLF, no blank line, no
Content-Length: the engine adds those once it knows the body's length), then the body
template (None for a request without one), the cookie jar and the extractors. Header order:
Host, User-Agent, Content-Type, Authorization (from basic_auth), then the step's own headers,
which replace a default of the same name.

A ws_connect step becomes ``PlanBuilder.ws_connect`` with the upgrade request's head; the
engine adds Sec-WebSocket-Key and the blank line.

Non-ASCII on the wire. The request target (the base URL's path, the step's path or URL path
and query, config values put in them) is UTF-8, percent-encoded as RFC 3986 says
(``percent_encode_target``): unreserved and reserved characters (but ``#``) and a valid
``%XX`` stay as they are, anything else (a space, a non-ASCII character, a control, a ``#``
from a config value) becomes ``%XX`` per byte.
Header values are sent as their UTF-8 bytes, unchanged; a control character in one (CR, LF,
NUL, any C0 but the tab, DEL) is refused, here too for the config values put in it (a config
a ``run_scenario`` gives is only known here). The Host header holds the IDNA (ASCII) form of
the host. Values a session sets at run time (variables) are copied by the engine as they are,
in the target and in headers alike.

The steps were checked (``check_steps``) before they get here, so this module does not check
again; what it needs of the compiler (``emit.StepCompiler``) is the ``RenderContext`` protocol
below, so neither imports the other in a circle.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit

from google.protobuf import json_format

from _fastpath.engine import (
    EX_BODY,
    EX_HEADER,
    EX_JSON,
    EX_REGEX,
    EX_STATUS,
    PlanBuilder,
)
from chaperon._version import __version__
from chaperon.core.lang.problems import not_a_url
from chaperon.core.lang.templates import Names, Parts, constant, invalid, is_constant, join
from chaperon.core.loadtest import (
    METHODS_WITHOUT_BODY,
    Target,
    metric_key,
    parse_target,
    ws_metric_path,
)
from chaperon.core.text import HEADER_CTL_BYTES
from chaperon.v1 import loadtest_pb2

USER_AGENT = f"chaperon/{__version__}"
# Methods that send Content-Length even with an empty body (as before templates existed).
METHODS_WITH_BODY = ("POST", "PUT", "PATCH")
_EXTRACT_KINDS = {
    "json_path": EX_JSON,
    "regex": EX_REGEX,
    "header": EX_HEADER,
    "status": EX_STATUS,
    "body": EX_BODY,
}
_LATIN1 = "latin-1"
# RFC 3986: unreserved and reserved characters stay as they are in a request target, but
# '#' (what follows it would be a fragment, never sent; a literal one is refused earlier).
_TARGET_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?[]@!$&'()*+,;="
)
_PERCENT = re.compile(rb"%[0-9A-Fa-f]{2}")


def percent_encode_target(text: str) -> str:
    """A path (with its query) as it goes on the request line: UTF-8, every byte that is not
    an unreserved or reserved character (``#`` is not kept), nor part of a valid ``%XX``,
    written ``%XX``.

    ``"/café menu?q=a b"`` -> ``"/caf%C3%A9%20menu?q=a%20b"``; ``"/a%2Fb"`` stays; ``"/100%"``
    -> ``"/100%25"``.
    """
    data = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x25 and _PERCENT.match(data, i):  # '%' of a valid %XX
            out += data[i : i + 3]
            i += 3
            continue
        if byte in _TARGET_SAFE:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
        i += 1
    return out.decode("ascii")


def _host_header(target: Target) -> bytes:
    """The Host header's value: the host's IDNA (ASCII) form, and the port unless default."""
    try:
        return target.host_header.encode("idna")
    except UnicodeError:  # an IP literal with a zone id, say: checked already, ASCII
        return target.host_header.encode("utf-8", "surrogatepass")


def _header_value(c: RenderContext, text: str, field_path: str) -> Parts:
    """A header value template as parts: UTF-8, no control character in its literal text or
    in the config values put in it."""
    parts = c.names.render(text, field_path, c.config)
    for part in parts:
        if isinstance(part, bytes) and HEADER_CTL_BYTES.search(part):
            raise invalid(
                field_path,
                "must not contain control characters (CR, LF, NUL ...), here or in"
                " the config values put in it",
            )
    return parts


class RenderContext(Protocol):
    """What rendering needs of the compiler: names, config in force, numbering."""

    names: Names
    config: dict[str, Any]
    base: Target | None

    @property
    def strip_query(self) -> bool: ...

    def target_index(self, target: Target, field_path: str) -> int: ...

    def key_index(self, key: str) -> int: ...


def _header_lines(headers: dict[str, Parts]) -> Parts:
    out: Parts = []
    for name, value in headers.items():
        out += [name.encode(_LATIN1, "replace") + b": ", *value, b"\r\n"]
    return out


def _url_target(url: str, field_path: str, schemes: tuple[str, ...]) -> tuple[Target, str]:
    """(target, path with query) of an absolute URL whose scheme is one of ``schemes``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise invalid(field_path, str(exc)) from None
    if parts.scheme not in schemes:
        raise invalid(field_path, not_a_url(url, schemes))
    scheme = "https" if parts.scheme in ("https", "wss") else "http"
    try:
        target = parse_target(f"{scheme}://{parts.netloc}")
    except ValueError as exc:
        raise invalid(field_path, str(exc)) from None
    return target, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def http_op(c: RenderContext, b: PlanBuilder, h: loadtest_pb2.HttpStep, q: str) -> None:
    """The op of one HTTP step onto ``b`` (``q`` is its field path, ``...run[3].http``)."""
    names, config = c.names, c.config
    method = h.method.upper()
    if h.WhichOneof("target") == "url":
        target, path_text = _url_target(h.url, f"{q}.url", ("http", "https"))
        prefix, target_field, path_field = "", f"{q}.url", f"{q}.url"
    else:
        if c.base is None:
            raise invalid("config.base_url", f"is required by {q}.path")
        target, path_text = c.base, h.path
        prefix, target_field, path_field = c.base.base_path, "config.base_url", f"{q}.path"
    path: Parts = [percent_encode_target(prefix).encode()]
    path += names.render(path_text, path_field, config, escape=percent_encode_target)
    if h.query:
        path.append(b"&" if "?" in path_text else b"?")
        for i, name in enumerate(sorted(h.query)):
            path.append((b"&" if i else b"") + quote_plus(name).encode() + b"=")
            path += names.render(h.query[name], f"{q}.query[{name}]", config, escape=quote_plus)
    body, content_type = _payload(c, h, q)
    headers: dict[str, Parts] = {
        "Host": [_host_header(target)],
        "User-Agent": [USER_AGENT.encode()],
    }
    if content_type:
        headers["Content-Type"] = [content_type.encode()]
    if h.HasField("basic_auth"):
        headers["Authorization"] = [_basic_auth(c, h.basic_auth, f"{q}.basic_auth")]
    for name, value in h.headers.items():
        rendered = _header_value(c, value, f"{q}.headers[{name}]")
        for default in list(headers):
            if default.lower() == name.lower():
                del headers[default]
        headers[name] = rendered
    head = join(
        [method.encode(_LATIN1, "replace") + b" ", *path, b" HTTP/1.1\r\n"] + _header_lines(headers)
    )
    with_body = bool(body) or method in METHODS_WITH_BODY
    extract = [_extract(c, e, f"{q}.extract[{k}]") for k, e in enumerate(h.extract)]
    cookies = c.config.get("cookies") is True
    target_index = c.target_index(target, target_field)
    metric = c.key_index(metric_key(h, c.strip_query))
    no_body = method in METHODS_WITHOUT_BODY
    if is_constant(head) and is_constant(body) and not extract and not cookies:
        request = constant(head)
        if with_body:
            request += b"Content-Length: %d\r\n" % len(constant(body))
        b.http(target_index, metric, request + b"\r\n" + constant(body), no_body)
        return
    b.http_template(
        target_index, metric, head, body if with_body else None, no_body, cookies, extract
    )


def _payload(c: RenderContext, h: loadtest_pb2.HttpStep, q: str) -> tuple[Parts, str]:
    """(body template, Content-Type) of an HTTP step; ([], "") without a payload."""
    kind = h.WhichOneof("payload")
    if kind == "body":
        return c.names.render(h.body, f"{q}.body", c.config), ""
    if kind == "json":
        value = json_format.MessageToDict(h.json)  # no NaN: checked
        return c.names.render_json(value, f"{q}.json", c.config), "application/json"
    if kind == "form":
        out: Parts = []
        for i, name in enumerate(sorted(h.form.fields)):
            out.append((b"&" if i else b"") + quote_plus(name).encode() + b"=")
            where = f"{q}.form.fields[{name}]"
            out += c.names.render(h.form.fields[name], where, c.config, escape=quote_plus)
        return join(out), "application/x-www-form-urlencoded"
    return [], ""


def _basic_auth(c: RenderContext, auth: loadtest_pb2.BasicAuth, q: str) -> bytes:
    """``Basic base64(user:password)``, computed now: only config values may be templated
    (base64 of a runtime value would have to be computed by the engine)."""
    user = constant(c.names.render(auth.username, f"{q}.username", c.config, runtime=False))
    password = constant(c.names.render(auth.password, f"{q}.password", c.config, runtime=False))
    return b"Basic " + base64.b64encode(user + b":" + password)


def _extract(c: RenderContext, e: loadtest_pb2.Extract, q: str) -> tuple[int, int, bytes, bool]:
    source = e.WhichOneof("source")  # var and source: checked
    if source == "json_path":
        expr = e.json_path.encode()
    elif source == "regex":
        expr = e.regex.encode()
    elif source == "header":
        expr = e.header.encode(_LATIN1, "replace")
    else:
        expr = b""
    return (c.names.slot(e.var, f"{q}.var"), _EXTRACT_KINDS[source], expr, bool(e.optional))


def ws_connect_op(
    c: RenderContext, b: PlanBuilder, w: loadtest_pb2.WsConnectStep, conn: int, q: str
) -> None:
    """The op of a ws_connect step onto ``b``: connection, target, metric, head."""
    if w.WhichOneof("target") == "url":
        target, path_text = _url_target(w.url, f"{q}.url", ("ws", "wss", "http", "https"))
        prefix, target_field, path_field = "", f"{q}.url", f"{q}.url"
    else:
        if c.base is None:
            raise invalid("config.base_url", f"is required by {q}.path")
        target, prefix = c.base, c.base.base_path  # https: wss
        path_text = w.path or ("" if prefix else "/")
        target_field, path_field = "config.base_url", f"{q}.path"
    path: Parts = [percent_encode_target(prefix).encode()]
    path += c.names.render(path_text, path_field, c.config, escape=percent_encode_target)
    headers: dict[str, Parts] = {
        "Host": [_host_header(target)],
        "User-Agent": [USER_AGENT.encode()],
        "Upgrade": [b"websocket"],
        "Connection": [b"Upgrade"],
        "Sec-WebSocket-Version": [b"13"],
    }
    for name, value in w.headers.items():
        headers[name] = _header_value(c, value, f"{q}.headers[{name}]")
    head = join([b"GET ", *path, b" HTTP/1.1\r\n"] + _header_lines(headers))
    metric = c.key_index(w.metric or f"WS connect {ws_metric_path(w, c.strip_query)}")
    b.ws_connect(conn, c.target_index(target, target_field), metric, head)
