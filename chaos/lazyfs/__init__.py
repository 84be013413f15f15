"""A power-loss filesystem in the spirit of Jepsen's lazyfs (see docs/chaos.md).

`Store` is the model (what processes see, what a power cut keeps); `fs` mounts it with
libfuse3; `mount.PowerLossMount` runs one mount as its own process and cuts its power.
"""
