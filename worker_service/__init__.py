"""The Worker: compiles its share of a load test into engine plans, runs them in _fastpath,
and streams histogram deltas to the master."""
