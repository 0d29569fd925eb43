# Included by engine.pyx: checking and converting Engine's other Python arguments (targets,
# metric keys) and the process limit its sessions need. The plan comes in through
# ``PlanBuilder`` (engine_plan.pxi), the options through ``EngineOptions`` (engine_options.pxi).

def _zero_stats() -> dict:
    return dict.fromkeys(
        ("sessions_started", "sessions_completed", "sessions_dropped", "sessions_timed_out",
         "sessions_failed", "requests_sent", "responses", "iterations", "errors"), 0
    )


def _as_list(name, value) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list, not {type(value).__name__}")
    return list(value)


def _bad_key(i, k):
    raise TypeError(f"metric_keys[{i}] must be a str, not {type(k).__name__}")


def _parse_target(i, target):
    """(host literal, port[, tls, server_name]) -> (4 or 6, packed address, port, scope id,
    tls, server name as ASCII bytes or None)."""
    if not isinstance(target, (tuple, list)) or len(target) not in (2, 4):
        raise TypeError(
            f"targets[{i}] must be a (host, port) or (host, port, tls, server_name) tuple, "
            f"got {target!r}"
        )
    host, port = target[0], target[1]
    if not isinstance(host, str):
        raise TypeError(f"targets[{i}]: host must be a str, not {type(host).__name__}")
    port = _check_int(f"targets[{i}] port", port, 1)
    if port > 65535:
        raise ValueError(f"targets[{i}]: port {port} is out of range 1..65535")
    literal = host[1:len(host) - 1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        raise ValueError(
            f"targets[{i}]: {host!r} is not an IPv4 or IPv6 literal (resolve host names first)"
        ) from None
    scope_id = 0
    if ip.version == 6 and ip.scope_id:
        scope_id = int(ip.scope_id) if ip.scope_id.isdigit() else _pysocket.if_nametoindex(ip.scope_id)
    tls = False
    name = None
    if len(target) == 4:
        tls = target[2]
        if not isinstance(tls, bool):
            raise TypeError(f"targets[{i}]: tls must be a bool, not {type(tls).__name__}")
        if tls:
            name = _server_name(i, target[3], str(ip).split("%")[0])
    return (ip.version, ip.packed, port, scope_id, tls, name)


def _server_name(i, server_name, ip_text) -> bytes:
    """The name a TLS target is verified against (and sent as SNI when it is a host name):
    ``server_name``, or the target's IP literal when it is None or empty."""
    if server_name is None or server_name == "":
        server_name = ip_text
    if not isinstance(server_name, str):
        raise TypeError(
            f"targets[{i}]: server_name must be a str, not {type(server_name).__name__}"
        )
    if server_name.startswith("[") and server_name.endswith("]"):
        server_name = server_name[1:len(server_name) - 1]      # tls.pxd: no brackets
    try:
        name = server_name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(
            f"targets[{i}]: server_name {server_name!r} is not ASCII (pass its IDNA form, "
            "xn--...)"
        ) from None
    if len(name) >= SERVER_NAME_SIZE or b"\0" in name or b"/" in name or b" " in name:
        raise ValueError(f"targets[{i}]: {server_name!r} is not a valid server name")
    return name


def _raise_nofile_limit(int64_t needed):
    """Raise RLIMIT_NOFILE's soft limit to the hard one; fail clearly if still too low."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    elif hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            soft = needed
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise RuntimeError(
            f"the sessions need about {needed} file descriptors but RLIMIT_NOFILE allows {soft}; "
            f"raise the hard limit (ulimit -Hn) or run fewer sessions per worker"
        )
