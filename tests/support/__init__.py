"""Helpers for tests that run real processes on loopback.

``ports`` finds free loopback ports, ``procs`` starts a command with its output in files,
waits for it to be ready (TCP port or gRPC health, always with a deadline) and always stops
it; ``nginx`` runs a throw-away nginx as the load target; ``cluster`` starts a Chaperon master
and its workers with the ``chaperon`` command line.
"""
