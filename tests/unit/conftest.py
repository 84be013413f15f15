from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI tests must not pick up the developer's own cluster address or token."""
    monkeypatch.delenv("HACONTROL_ADDR", raising=False)
    monkeypatch.delenv("HACONTROL_TOKEN", raising=False)
