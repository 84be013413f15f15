"""Re-export: the error type now lives in `hacontrol.model.errors`."""

from hacontrol.model.errors import Rejection, conflict, invalid, not_found, quota_exceeded

__all__ = ["Rejection", "conflict", "invalid", "not_found", "quota_exceeded"]
