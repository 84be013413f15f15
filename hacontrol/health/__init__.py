"""The cluster's health: a frozen view of it (`view.py`) and its score (`score.py`)."""
