"""Result files and cache entries are replaced whole or not at all, even on a full disk."""

from __future__ import annotations

import errno
import json
import os

import pytest

from dfu_train.results import store


def test_a_full_disk_while_writing_a_record_leaves_the_earlier_one_intact(tmp_path, monkeypatch):
    path = tmp_path / "fold_results" / "abc-s42-f0.json"
    store.write_json_atomic(path, {"qwk": 0.5})

    def disk_full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.write_json_atomic(path, {"qwk": 0.9})
    assert json.loads(path.read_text()) == {"qwk": 0.5}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    assert store.read_json_files(list(store.Location(path.parent).glob("*.json"))) == [{"qwk": 0.5}]
