"""Loaded by every Python started with this folder on PYTHONPATH (`bench/cp_trace.py` sets
it for the replicas it starts); does nothing unless HACONTROL_TRACE_DIR is set. The hooks
are loaded by file name: the replicas may run another checkout's `bench` package."""

import os

if os.environ.get("HACONTROL_TRACE_DIR"):
    import importlib.util

    _path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "cp_trace_hooks.py")
    _spec = importlib.util.spec_from_file_location("_hacontrol_trace_hooks", _path)
    assert _spec is not None and _spec.loader is not None
    _hooks = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_hooks)
    _hooks.install(os.environ["HACONTROL_TRACE_DIR"])
