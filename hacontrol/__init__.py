"""hacontrol: a highly available control plane for processes."""
__version__ = "0.1.0"
