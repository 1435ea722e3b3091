"""Every test of tests/data/ starts from an environment without dataset roots and with a private user
cache, so that data on the machine running the tests is never picked up."""
from __future__ import annotations

import pytest
from dataset_files import ROOT_VARS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ROOT_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
