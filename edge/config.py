"""Configuration: one TOML file, profiles, `EDGE_<SECTION>_<KEY>` overrides, secrets.

Each worker declares its own `Section`s next to its code; the runtime assembles them, so a
new worker adds its section without touching this module. Validation collects every problem
and phrases each one so a person can act on it: which key, what is wrong, and an example of
a right value.

Written by hand rather than with pydantic because the messages, the environment parsing
against the schema (keys may contain underscores) and the per-profile defaults are the
whole point, and they are short to write directly.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

PROFILES = ("sim", "pi")
RESERVED_ENV = frozenset({"EDGE_CONFIG", "EDGE_STATE_DIR", "EDGE_REQUIRE_INTEGRATION", "EDGE_TEST_DATA",
                          "EDGE_PREFIX", "EDGE_SERVICE_CONTROL"})  # the last two: edge.releases, edge.service_control
DEFAULT_CONFIG_PATH = Path("/etc/edge/edge.toml")
# Passwords that appear in examples and tutorials; a device using one is as good as open.
EXAMPLE_SECRETS = frozenset({"changeme", "change-me", "password", "secret", "admin", "raspberry", "example", "test"})


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one actionable line each."""

    def __init__(self, problems: list[str], source: str = ""):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"{len(problems)} problem(s){where}:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Key:
    """One config key. `example` is shown in error messages; `profiles` overrides the default
    per profile (e.g. the camera backend is `fake` in `sim` and `picamera2` on a `pi`)."""

    name: str
    type: type
    default: Any
    help: str = ""
    example: Any = None
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    profiles: Mapping[str, Any] = field(default_factory=dict)
    secret_file: bool = False  # a path whose file content is a secret (`*_file` keys)

    def default_for(self, profile: str) -> Any:
        return self.profiles.get(profile, self.default)


@dataclass(frozen=True)
class Section:
    name: str
    keys: tuple[Key, ...]
    help: str = ""
    # cross-key checks: check(config, problems, warnings) appends actionable lines
    checks: tuple[Callable[["Config", list[str], list[str]], None], ...] = ()

    def key(self, name: str) -> Key | None:
        return next((k for k in self.keys if k.name == name), None)


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return str(value)


def _type_name(t: type) -> str:
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list"}[t]


def _example(section: Section, key: Key) -> str:
    value = key.example if key.example is not None else key.default
    if value is None:
        value = {str: "text", int: 1, float: 1.5, bool: True, list: []}[key.type]
    return f"{key.name} = {_toml_literal(value)}"


def _check_value(section: Section, key: Key, value: Any, origin: str) -> tuple[Any, str | None]:
    """Coerce and check one value; returns (value, problem)."""
    where = f"[{section.name}] {key.name}{origin}"
    if value is None:
        return None, None
    t = key.type
    ok = (isinstance(value, t) and not (t is int and isinstance(value, bool))) or (
        t is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        return value, f"{where}: expected {_type_name(t)}, got {value!r}; for example: {_example(section, key)}"
    if t is float:
        value = float(value)
    if key.choices is not None and value not in key.choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in key.choices], n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        return value, (f"{where}: {value!r} is not one of {', '.join(map(repr, key.choices))}{did}; "
                       f"for example: {_example(section, key)}")
    if key.min is not None and value < key.min:
        return value, f"{where}: {value!r} is below the minimum {key.min}; for example: {_example(section, key)}"
    if key.max is not None and value > key.max:
        return value, f"{where}: {value!r} is above the maximum {key.max}; for example: {_example(section, key)}"
    return value, None


def _parse_env(section: Section, key: Key, raw: str) -> Any:
    """Environment values are text; parse them as the schema says."""
    if key.type is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        return raw
    if key.type in (int, float):
        try:
            return key.type(raw)
        except ValueError:
            return raw
    if key.type is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


class SectionValues(Mapping[str, Any]):
    """The validated values of one section, readable as `cfg.port` or `cfg["port"]`."""

    def __init__(self, name: str, values: dict[str, Any], secrets: dict[str, str]):
        self._name = name
        self._values = values
        self._secrets = secrets

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"[{self._name}] has no key {key!r}") from None

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def secret(self, name: str) -> str | None:
        """The secret `name` (from `EDGE_<SECTION>_<NAME>` or the file in `<name>_file`)."""
        return self._secrets.get(name)

    def redacted(self) -> dict[str, Any]:
        return dict(self._values)  # secrets live only in _secrets, never in values


@dataclass
class Config:
    profile: str
    sections: dict[str, SectionValues]
    warnings: list[str]
    source: str
    text: str  # the TOML text it was built from ("" for defaults only), kept as last-known-good

    def __getitem__(self, name: str) -> SectionValues:
        return self.sections[name]

    def section(self, name: str) -> SectionValues:
        return self.sections[name]


def _read_secrets(section: Section, values: dict[str, Any], env: Mapping[str, str],
                  problems: list[str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for key in section.keys:
        if not key.secret_file:
            continue
        secret_name = key.name.removesuffix("_file")
        env_name = f"EDGE_{section.name}_{secret_name}".upper()
        if env.get(env_name):
            secrets[secret_name] = env[env_name]
        elif values.get(key.name):
            path = Path(values[key.name])
            try:
                secrets[secret_name] = path.read_text().strip()
            except OSError as exc:
                problems.append(f"[{section.name}] {key.name}: cannot read the secret file {path} "
                                f"({exc.strerror}); create it readable by the edge user (mode 0600), "
                                f"or set {env_name} instead")
    return secrets


def build(sections: Iterable[Section], data: Mapping[str, Any], env: Mapping[str, str], profile: str,
          source: str = "", text: str = "") -> Config:
    """Validate TOML data plus environment overrides against the schema."""
    schema = {s.name: s for s in sections}
    problems: list[str] = []
    warnings: list[str] = []
    data = dict(data)
    file_profile = data.pop("profile", None)
    if file_profile is not None and file_profile not in PROFILES:
        problems.append(f"profile: {file_profile!r} is not one of {', '.join(PROFILES)}; for example: profile = \"pi\"")

    for name, table in data.items():
        if name not in schema:
            hint = difflib.get_close_matches(name, list(schema), n=1)
            did = f"; did you mean [{hint[0]}]?" if hint else f"; known sections: {', '.join(sorted(schema))}"
            problems.append(f"[{name}]: unknown section{did}")
            continue
        section = schema[name]
        if not isinstance(table, dict):
            first = _example(section, section.keys[0]) if section.keys else ""
            problems.append(f"{name}: expected a [{name}] table, got {table!r}; "
                            f"for example: [{name}] on one line and {first} on the next")
            continue
        for key_name in table:
            if section.key(key_name) is None:
                known = [k.name for k in section.keys]
                hint = difflib.get_close_matches(key_name, known, n=1)
                did = f" (did you mean {hint[0]}?)" if hint else f"; known keys: {', '.join(known)}"
                right = section.key(hint[0]) if hint else (section.keys[0] if section.keys else None)
                example = f"; for example: {_example(section, right)}" if right else ""
                problems.append(f"[{name}] {key_name}: unknown key{did}{example}")

    result: dict[str, SectionValues] = {}
    for section in schema.values():
        table = data.get(section.name) if isinstance(data.get(section.name), dict) else {}
        values: dict[str, Any] = {}
        for key in section.keys:
            value, origin = key.default_for(profile), ""
            if key.name in table:
                value, origin = table[key.name], ""
            env_name = f"EDGE_{section.name}_{key.name}".upper()
            if env_name in env:
                value, origin = _parse_env(section, key, env[env_name]), f" (from {env_name})"
            value, problem = _check_value(section, key, value, origin)
            if problem:
                problems.append(problem)
            values[key.name] = value
        secrets = _read_secrets(section, values, env, problems)
        for secret_name, secret in secrets.items():
            if secret.lower() in EXAMPLE_SECRETS:
                warnings.append(f"[{section.name}] {secret_name}: this is a well-known example password; "
                                f"set a strong one")
        result[section.name] = SectionValues(section.name, values, secrets)

    known_env = {f"EDGE_{s.name}_{k.name}".upper() for s in schema.values() for k in s.keys}
    known_env |= {f"EDGE_{s.name}_{k.name.removesuffix('_file')}".upper()
                  for s in schema.values() for k in s.keys if k.secret_file}
    for name in env:
        if name.startswith("EDGE_") and name not in known_env and name not in RESERVED_ENV:
            hint = difflib.get_close_matches(name, sorted(known_env), n=1)
            did = f"; did you mean {hint[0]}?" if hint else ""
            warnings.append(f"{name}: environment variable names no config key and is ignored{did}")

    config = Config(profile=profile, sections=result, warnings=warnings, source=source, text=text)
    if not problems:
        for section in schema.values():
            for check in section.checks:
                check(config, problems, warnings)
    if problems:
        raise ConfigError(problems, source)
    return config


def read_config_text(path: Path) -> str:
    """The file's text; a ConfigError (never a traceback) when it cannot be read or is not
    UTF-8 (TOML files are UTF-8), so an undecodable file is an invalid config like any
    other: the last known-good one at boot, exit 78 from `edge config check`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read the config file ({exc.strerror}); create it from "
                           f"image/edge.example.toml or pass --config FILE"], str(path)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([f"not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} cannot be decoded; "
                           f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"], str(path)) from None


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}; check quoting (strings need \"...\") and [section] headers"],
                          source) from None


def load(sections: Iterable[Section], path: Path | None, env: Mapping[str, str] | None = None,
         sim: bool = False, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Load `path` (or defaults when it is None) with the environment on top. `defaults`
    (TOML-shaped) stand in for keys the file leaves out: defaults that depend on this device
    (its node id), which a Key's static default cannot know."""
    env = os.environ if env is None else env
    text = ""
    data: dict[str, Any] = {}
    if path is not None:
        text = read_config_text(path)
        data = parse_toml(text, str(path))
    for name, values in (defaults or {}).items():
        table = data.get(name, {})
        if isinstance(table, dict):
            data = {**data, name: {**values, **table}}
    profile = "sim" if sim else data.get("profile") or "pi"
    if profile not in PROFILES:
        profile = "pi"  # reported as a problem by build()
    return build(sections, data, env, profile, source=str(path or "defaults"), text=text)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
