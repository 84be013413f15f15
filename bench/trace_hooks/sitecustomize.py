"""Loaded by every Python started with this folder on PYTHONPATH (`bench/cp_trace.py` sets
it for the replicas it starts); does nothing unless HACONTROL_TRACE_DIR is set."""

import os

if os.environ.get("HACONTROL_TRACE_DIR"):
    from bench.cp_trace_hooks import install

    install(os.environ["HACONTROL_TRACE_DIR"])
