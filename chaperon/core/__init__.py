"""The core: what both services and the client share, with no gRPC in it.

Domain errors (``errors``), durations, the target allow-list, the load-test model
(``loadtest``) and the session-language compiler. It imports only the generated messages
(``chaperon.v1``), ``_fastpath`` and the standard library; the gRPC plumbing
(``chaperon.rpc``), the services and the client all import it, never the other way round
(``docs/architecture.md``).
"""
