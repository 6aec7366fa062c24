"""The tool makes its own folders private, and never closes a shared folder such as /tmp."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from monitor.paths import ensure_private_dir, ensure_private_file


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_own_new_and_existing_folders_become_owner_only(tmp_path: Path) -> None:
    new = ensure_private_dir(tmp_path / "a" / "data")
    assert _mode(new) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    ensure_private_dir(old)
    assert _mode(old) == 0o700


def test_a_shared_sticky_folder_like_tmp_is_left_open(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    ensure_private_dir(shared)
    ensure_private_file(shared / "monitor.db")  # e.g. sqlite:////tmp/monitor.db
    assert _mode(shared) == 0o1777
    assert _mode(shared / "monitor.db") == 0o600


def test_a_files_existing_parent_folder_is_not_changed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    ensure_private_file(home / "monitor.db")
    assert _mode(home) == 0o755  # the user's own folder, not ours to close
    assert _mode(home / "monitor.db") == 0o600
    ensure_private_file(home / "new" / "monitor.db")
    assert _mode(home / "new") == 0o700
