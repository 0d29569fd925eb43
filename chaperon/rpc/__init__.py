"""gRPC plumbing shared by the services and the client: the mapping of domain errors to
status codes and back (``status``), bearer-token auth (``auth``), channels and servers with
TLS, health and reflection (``channels``). It imports the core, never a service or the
client (``docs/architecture.md``).
"""
