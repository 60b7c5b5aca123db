"""`edge netbox sync [--dry-run]` as a person runs it, against the fake NetBox: a readable
diff (object, field: old → new), nothing written with --dry-run, no changes the second
time; the token never printed."""

from __future__ import annotations

import argparse
import subprocess

from services.netbox.cli import cmd_sync

from runtime_helpers import EDGE, edge_env


def run_sync(fake, tmp_path, *args, token=None):
    config = tmp_path / "edge.toml"
    config.write_text(f'[netbox]\nurl = "{fake.url}"\nsite = "home"\ncreate_prerequisites = true\n'
                      f'read_timeout_s = 5\n')
    env = edge_env(tmp_path / "state", EDGE_CONFIG=config, EDGE_NETBOX_TOKEN=token or fake.token)
    (tmp_path / "state").mkdir(exist_ok=True)
    return subprocess.run([EDGE, "netbox", "sync", *args], env=env, capture_output=True, text=True, timeout=120)


def test_dry_run_prints_a_readable_diff_and_writes_nothing_then_a_sync_writes_and_a_second_has_nothing(fake,
                                                                                                       tmp_path):
    dry = run_sync(fake, tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "create device " in dry.stdout and "    custom_fields.edge_identity: (none) → " in dry.stdout
    assert "dry run: nothing written" in dry.stdout and "enabled = false" in dry.stderr
    assert fake.counters.writes == 0 and fake.all("dcim/devices") == []
    assert fake.token not in dry.stdout + dry.stderr

    done = run_sync(fake, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "change(s) written" in done.stdout and len(fake.all("dcim/devices")) == 1
    again = run_sync(fake, tmp_path, "--dry-run")
    assert again.stdout.startswith("no changes"), again.stdout


def test_a_refused_token_says_what_to_fix(fake, tmp_path, monkeypatch, capsys):
    config = tmp_path / "edge.toml"
    config.write_text(f'[netbox]\nurl = "{fake.url}"\nsite = "home"\n')
    for name, value in edge_env(tmp_path / "state", EDGE_CONFIG=config, EDGE_NETBOX_TOKEN="not-the-token").items():
        monkeypatch.setenv(name, value)
    (tmp_path / "state").mkdir()
    assert cmd_sync(argparse.Namespace(config=None, sim=False, dry_run=True)) == 1
    out, err = capsys.readouterr()
    assert "refused the API token" in err and "token_file" in err
    assert "not-the-token" not in out + err
