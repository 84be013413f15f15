"""The web UI's static files (`static/`), served by `hacontrol.api.ui`."""
