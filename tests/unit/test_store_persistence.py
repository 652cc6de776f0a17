"""The persistence verdicts of stores/persistence.py, from what CONFIG GET and INFO persistence answer."""

from __future__ import annotations

import pytest

from jwks_service.stores.persistence import (
    NO_PERSISTENCE,
    RDB_MAX_AGE,
    UNKNOWN,
    Persistence,
    classify_config,
    classify_info,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("appendonly", "save", "aof", "rdb", "warning"),
    [
        ("no", "", False, False, NO_PERSISTENCE),
        ("yes", "", True, False, None),
        ("no", "3600 1 300 100 60 10000", False, True, None),
        ("yes", "900 1", True, True, None),
        ("no", "  ", False, False, NO_PERSISTENCE),
    ],
)
def test_config(appendonly: str, save: str, aof: bool, rdb: bool, warning: str | None) -> None:
    found = classify_config(appendonly, save)
    assert (found.aof, found.rdb, found.source, found.warning) == (aof, rdb, "config", warning)


def test_info_aof() -> None:
    found = classify_info({"aof_enabled": 1, "rdb_changes_since_last_save": 50, "rdb_last_save_time": 0}, NOW)
    assert found.aof is True
    assert found.rdb is False  # and AOF alone is enough
    assert found.warning is None
    assert found.source == "info"


def test_info_changes_never_snapshotted_mean_no_rdb() -> None:
    info = {"aof_enabled": 0, "rdb_changes_since_last_save": 3, "rdb_last_save_time": NOW - RDB_MAX_AGE - 1}
    found = classify_info(info, NOW)
    assert found.warning == NO_PERSISTENCE
    assert "3 changes not in an RDB snapshot" in found.describe()


def test_info_recent_changes_are_given_the_schedule_time() -> None:
    info = {"aof_enabled": 0, "rdb_changes_since_last_save": 3, "rdb_last_save_time": NOW - 60}
    assert classify_info(info, NOW).warning is None
    assert classify_info(info, NOW, rdb_max_age=30).warning == NO_PERSISTENCE


def test_info_nothing_unsaved() -> None:
    info = {"aof_enabled": 0, "rdb_changes_since_last_save": 0, "rdb_last_save_time": NOW - 10 * RDB_MAX_AGE}
    assert classify_info(info, NOW).warning is None


def test_info_without_rdb_fields_is_unknown() -> None:
    found = classify_info({"aof_enabled": 0, "rdb_changes_since_last_save": "n/a"}, NOW)
    assert found.rdb is None
    assert found.warning == UNKNOWN


def test_unknown() -> None:
    found = Persistence(aof=None, rdb=None, source="unknown")
    assert found.durable is None
    assert found.warning == UNKNOWN
    assert found.describe() == "AOF unknown, RDB unknown (CONFIG and INFO refused)"
