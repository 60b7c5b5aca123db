"""Config validation: each bad file gets the exact message a person can act on."""

from __future__ import annotations

import logging
import subprocess

import pytest
from runtime_helpers import EDGE, edge_env

from edge.config import ConfigError, load
from edge.assembly import all_sections, load_config
from services.system.worker import SystemWorker

SECTIONS = all_sections([SystemWorker])


def problems_of(tmp_path, text, env=None):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(SECTIONS, path, env or {}, sim=True)
    return info.value.problems


@pytest.mark.parametrize("text, message", [
    ("[dorbell]\nenabled = true\n", "[dorbell]: unknown section; known sections: audit, health, logging, node, "
                                    "runtime, safe_mode, supervisor, system"),
    ("[helth]\nport = 1\n", "[helth]: unknown section; did you mean [health]?"),
    ("[health]\nprot = 8790\n", "[health] prot: unknown key (did you mean port?); for example: port = 8790"),
    ("[health]\nzzz = 1\n", "[health] zzz: unknown key; known keys: host, port, token_file; for example: "
                             "host = \"127.0.0.1\""),
    ("health = 8790\n", "health: expected a [health] table, got 8790; for example: [health] on one line and "
                        "host = \"127.0.0.1\" on the next"),
    ("[health]\nport = \"eighty\"\n", "[health] port: expected a whole number, got 'eighty'; for example: port = 8790"),
    ("[health]\nport = 70000\n", "[health] port: 70000 is above the maximum 65535; for example: port = 8790"),
    ("[logging]\nlevel = \"verbose\"\n", "[logging] level: 'verbose' is not one of 'debug', 'info', 'warning', "
                                         "'error'; for example: level = \"info\""),
    ("[system]\nenabled = \"yes\"\n", "[system] enabled: expected true or false, got 'yes'; for example: enabled = true"),
    ("[node]\nid = \"front door\"\n", "[node] id: 'front door' may contain only letters, digits, _ and - (it is part "
                                      "of MQTT topics and Home Assistant ids); for example: id = \"front-door\""),
    ("[health\nport = 1\n", "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 8); "
                            "check quoting (strings need \"...\") and [section] headers"),
    ("profile = \"laptop\"\n", "profile: 'laptop' is not one of sim, pi; for example: profile = \"pi\""),
])
def test_bad_config_names_key_problem_and_example(tmp_path, text, message):
    assert problems_of(tmp_path, text) == [message]


def test_every_problem_is_reported_at_once(tmp_path):
    assert len(problems_of(tmp_path, "[health]\nport = -1\nprot = 2\n[x]\n")) == 3


def test_environment_overrides_are_parsed_against_the_schema(tmp_path):
    config = load(SECTIONS, None, {"EDGE_HEALTH_PORT": "9000", "EDGE_SYSTEM_ENABLED": "false",
                                   "EDGE_SYSTEM_INTERVAL_S": "2.5", "EDGE_RUNTIME_PLUGINS": "a:B, c:D"}, sim=True)
    assert config["health"].port == 9000
    assert config["system"].enabled is False
    assert config["system"].interval_s == 2.5
    assert config["runtime"].plugins == ["a:B", "c:D"]


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError) as info:
        load(SECTIONS, None, {"EDGE_HEALTH_PORT": "http"}, sim=True)
    assert info.value.problems == ["[health] port (from EDGE_HEALTH_PORT): expected a whole number, got 'http'; "
                                   "for example: port = 8790"]


def test_reserved_environment_names_are_not_config_keys_and_typos_warn():
    config = load(SECTIONS, None, {"EDGE_STATE_DIR": "/tmp/x", "EDGE_TEST_DATA": "/d", "EDGE_CONFIG": "/c",
                                   "EDGE_REQUIRE_INTEGRATION": "1", "EDGE_HEALTH_PROT": "1"}, sim=True)
    assert config.warnings == ["EDGE_HEALTH_PROT: environment variable names no config key and is ignored; "
                               "did you mean EDGE_HEALTH_PORT?"]


def test_secret_from_file_is_used_but_never_in_values_or_logs(tmp_path, caplog):
    token = tmp_path / "token"
    token.write_text("s3cr3t-token-value\n")
    config = load(SECTIONS, None, {"EDGE_HEALTH_TOKEN_FILE": str(token)}, sim=True)
    assert config["health"].secret("token") == "s3cr3t-token-value"
    assert "s3cr3t" not in repr(config["health"].redacted())
    assert "s3cr3t" not in caplog.text


def test_secret_from_environment_wins_over_file():
    config = load(SECTIONS, None, {"EDGE_HEALTH_TOKEN": "from-env"}, sim=True)
    assert config["health"].secret("token") == "from-env"


def test_missing_secret_file_says_how_to_fix(tmp_path):
    problems = problems_of(tmp_path, f"[health]\ntoken_file = \"{tmp_path}/nope\"\n")
    assert problems == [f"[health] token_file: cannot read the secret file {tmp_path}/nope (No such file or "
                        f"directory); create it readable by the edge user (mode 0600), or set EDGE_HEALTH_TOKEN instead"]


def test_insecure_settings_warn(tmp_path):
    weak = tmp_path / "token"
    weak.write_text("changeme")
    config = load(SECTIONS, None, {"EDGE_HEALTH_HOST": "0.0.0.0"}, sim=True)
    assert any("exposes health and metrics to the network without a token" in w for w in config.warnings)
    config = load(SECTIONS, None, {"EDGE_HEALTH_TOKEN_FILE": str(weak)}, sim=True)
    assert config.warnings == ["[health] token: this is a well-known example password; set a strong one"]


def test_a_short_health_token_draws_a_warning(tmp_path):
    short = tmp_path / "token"
    short.write_text("x")
    config = load(SECTIONS, None, {"EDGE_HEALTH_TOKEN_FILE": str(short)}, sim=True)
    assert any("the token is 1 characters long, short enough to guess" in w for w in config.warnings)
    short.write_text("3f9c0a7d1e5b42c88a6e0f1d2c3b4a59")
    assert load(SECTIONS, None, {"EDGE_HEALTH_TOKEN_FILE": str(short)}, sim=True).warnings == []


def test_profile_defaults_differ_for_sim_and_pi():
    from edge.config import Key, Section, build
    section = Section("camera", (Key("backend", str, "picamera2", profiles={"sim": "fake"}),))
    assert build([section], {}, {}, "sim")["camera"].backend == "fake"
    assert build([section], {}, {}, "pi")["camera"].backend == "picamera2"


def test_config_check_command_exits_non_zero_with_messages(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("[health]\nprot = 1\n")
    env = edge_env(tmp_path / "state")
    result = subprocess.run([EDGE, "config", "check", "--config", str(path)], env=env, capture_output=True, text=True)
    assert result.returncode == 78
    assert "[health] prot: unknown key (did you mean port?); for example: port = 8790" in result.stderr
    path.write_text("[health]\nport = 8000\n")
    result = subprocess.run([EDGE, "config", "check", "--config", str(path)], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout


PLUGIN_EXAMPLE = 'for example: plugins = ["mycompany.edge_workers:GarageDoor"]'


@pytest.mark.parametrize("plugins, message", [
    ('["nosuch.module:Thing"]', "[runtime] plugins: cannot import 'nosuch.module' (No module named 'nosuch'); "
                                + PLUGIN_EXAMPLE),
    ('["edge.testing.workers:Nope"]', "[runtime] plugins: module 'edge.testing.workers' has no 'Nope'; "
                                      + PLUGIN_EXAMPLE),
    ('["edge.testing.workers"]', "[runtime] plugins: 'edge.testing.workers' is not \"module:Class\"; "
                                 + PLUGIN_EXAMPLE),
    ('["edge.testing.workers:socket"]', "[runtime] plugins: 'edge.testing.workers:socket' is not a worker class "
                                        "(a subclass of edge.worker.Worker); " + PLUGIN_EXAMPLE),
])
def test_bad_plugin_entry_is_a_config_error_naming_the_key(tmp_path, plugins, message):
    path = tmp_path / "edge.toml"
    path.write_text(f"[runtime]\nplugins = {plugins}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, True, {})
    assert info.value.problems == [message] and info.value.source == str(path)


def test_bad_plugin_from_the_environment_names_the_variable():
    with pytest.raises(ConfigError) as info:
        load_config(None, True, {"EDGE_RUNTIME_PLUGINS": "edge.testing.workers:IdleWorker, nosuch.module:Thing"})
    assert info.value.problems == ["[runtime] plugins (from EDGE_RUNTIME_PLUGINS): cannot import 'nosuch.module' "
                                   "(No module named 'nosuch'); " + PLUGIN_EXAMPLE]


def test_config_check_reports_a_bad_plugin_without_a_traceback(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[runtime]\nplugins = ["nosuch.module:Thing"]\n')
    result = subprocess.run([EDGE, "config", "check", "--config", str(path)], env=edge_env(tmp_path / "state"),
                            capture_output=True, text=True)
    assert result.returncode == 78
    assert ("[runtime] plugins: cannot import 'nosuch.module' (No module named 'nosuch'); " + PLUGIN_EXAMPLE
            in result.stderr)
    assert "Traceback" not in result.stderr


def test_every_discovered_worker_declares_an_enabled_key_in_its_own_section():
    from edge.worker import discover_workers
    found = discover_workers()
    assert {e.name for e in found} >= {"system"}  # the entry points are installed
    for entry in found:
        sections = entry.cls.sections
        assert sections, f"worker {entry.name} declares no config section of its own"
        key = sections[0].key("enabled")
        assert key is not None and key.type is bool, (
            f"worker {entry.name}: [{sections[0].name}] has no boolean `enabled` key "
            f"(EDGE_{sections[0].name.upper()}_ENABLED=false must disable it)")
        config = load(all_sections([entry.cls]), None, {f"EDGE_{sections[0].name}_ENABLED".upper(): "false"},
                      sim=True)
        assert not entry.cls.enabled(config)
