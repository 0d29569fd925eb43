"""Helpers for the tests, and what starts their servers.

``tiers`` names the three test tiers (pure, engine, system) and which one is running;
``servers`` starts every server a test runs against (threads in the test process, nginx, the
session-language target, scripted servers) and holds their fixtures; ``ports`` finds free
loopback ports, ``procs`` starts a command with its output in files, waits for it to be ready
(TCP port or gRPC health, always with a deadline) and always stops it; ``nginx`` renders and
runs a throw-away nginx; ``cluster`` starts a Chaperon master and its workers with the
``chaperon`` command line.
"""
