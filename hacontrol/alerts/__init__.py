"""Alerting: evaluating the rules (`evaluate.py`, pure), when to try a delivery again
(`backoff.py`, pure), the sinks (`sinks.py`, the I/O) and the leader's loop that ties them
to the log (`runner.py`)."""
