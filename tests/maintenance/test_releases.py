"""The release layout on its own: what counts as installed, what pruning may remove, and the
update lock that tells a live updater from one that died."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge.releases import INCOMPLETE, ReleaseError, ReleaseLayout


def layout_with(tmp_path, *versions: str) -> ReleaseLayout:
    layout = ReleaseLayout(tmp_path / "opt")
    for version in versions:
        (layout.release(version) / "bin").mkdir(parents=True)
    return layout


def test_a_half_installed_release_is_not_one_and_versions_sort_naturally(tmp_path):
    layout = layout_with(tmp_path, "1.10.0", "1.9.0", "1.9.1rc1", "2.0.0")
    (layout.release("2.0.0") / INCOMPLETE).write_text("")
    assert layout.versions() == ["1.9.0", "1.9.1rc1", "1.10.0"]
    with pytest.raises(ReleaseError, match="not installed"):
        layout.switch_current("3.0.0")
    with pytest.raises(ReleaseError, match="not a release version"):
        layout.release("../../etc")


def test_pruning_keeps_the_current_committed_and_previous_releases(tmp_path):
    layout = layout_with(tmp_path, "1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0")
    layout.switch_current("1.4.0")
    layout.commit("1.2.0")
    layout.update_state(previous="1.0.0")
    assert layout.prune(keep=2) == ["1.1.0", "1.3.0"]
    assert layout.versions() == ["1.0.0", "1.2.0", "1.4.0"]
    assert os.readlink(layout.current_link) == "releases/1.4.0"  # relative: valid in an image root too


def test_without_a_committed_link_the_current_release_counts_as_committed(tmp_path):
    layout = layout_with(tmp_path, "1.0.0")
    layout.switch_current("1.0.0")
    assert layout.committed() == "1.0.0"


def test_the_update_lock_is_seen_while_its_holder_lives_and_not_after_it_dies(tmp_path):
    layout = layout_with(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from edge.releases import ReleaseLayout\n"
                               f"with ReleaseLayout({str(layout.prefix)!r}).updating():\n"
                               "    print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert layout.updater_running()
        with pytest.raises(ReleaseError, match="another update is running"), layout.updating():
            pass
    finally:
        holder.kill()  # as a power cut would: the kernel drops the lock
        holder.wait()
    assert not layout.updater_running()
    with layout.updating():
        assert layout.lock_path.exists()
