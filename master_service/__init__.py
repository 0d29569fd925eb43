"""The Master: validates, stores and queues load tests, splits them over the workers, and
merges the workers' histogram deltas into each run's result."""
