"""Home Assistant MQTT discovery: the documented configuration options, as a table.

Reference data for tests. These are the option keys that the Home Assistant docs list
for the MQTT components this appliance announces. Nothing here comes from Home Assistant
itself; the sets were typed by hand from the pages listed below. Every set matches the
page version named beside it.

Doc pages (rendered site):
    https://www.home-assistant.io/integrations/sensor.mqtt/
    https://www.home-assistant.io/integrations/binary_sensor.mqtt/
    https://www.home-assistant.io/integrations/button.mqtt/
    https://www.home-assistant.io/integrations/update.mqtt/
    https://www.home-assistant.io/integrations/event.mqtt/
    https://www.home-assistant.io/integrations/image.mqtt/
    https://www.home-assistant.io/integrations/camera.mqtt/
    https://www.home-assistant.io/integrations/mqtt/   (discovery, device/origin/availability,
                                                          abbreviations)
    https://www.home-assistant.io/integrations/sensor/#device-class
    https://www.home-assistant.io/integrations/binary_sensor/#device-class
    https://www.home-assistant.io/integrations/button/#device-class
    https://www.home-assistant.io/integrations/update/#device-classes
    https://www.home-assistant.io/integrations/event/#device-class
    https://developers.home-assistant.io/docs/core/entity/#registry-properties  (entity_category)

Sources read (repository home-assistant/home-assistant.io, file @ commit). These came from
a stored copy of GitHub, which keeps several versions of each file. It shows no commit
dates and cannot list versions, so each version's age below is judged from its content:
    source/_integrations/sensor.mqtt.markdown          @ 9e4a69ab998700a518e366a7f54551a150fccf94
    source/_integrations/binary_sensor.mqtt.markdown   @ fbc3a3b3bdcce503437401c8ea500a3f72181fd8
    source/_integrations/button.mqtt.markdown          @ d72255663705fa665050cd738a270e89f0ae8db3
    source/_integrations/update.mqtt.markdown          @ d72255663705fa665050cd738a270e89f0ae8db3
    source/_integrations/event.mqtt.markdown           @ 172bcca0686c1765904a39065d10fa31cab295a1
    source/_integrations/image.mqtt.markdown           @ 23472596b17b3e4e94f1d589a9bdcafeeade92af
    source/_integrations/camera.mqtt.markdown          @ 9e4a69ab998700a518e366a7f54551a150fccf94
    source/_integrations/mqtt.markdown                 @ 0a314403e71f72c2fa6fdcb51b28d4876b4ab7c2
    source/_integrations/time.mqtt.markdown            @ d31750aed7b59bc2957a42e23024d117fc5f5685 (ha_release 2026.5)
    source/_integrations/date.mqtt.markdown            @ 960c2d728d7ba215f19bc7078bf3b9ff3b72e10b (ha_release 2026.5)
    source/_integrations/sensor.markdown               @ 7450caca5f98bff566520400239f9e2ee525cb29 (older)
    source/_integrations/sensor.markdown               @ 0015df1c81eea68f4c5f049863c72835b8b76997 (middle)
    source/_integrations/sensor.markdown               newest stored copy; the store shows no
                                                       commit for it (store id 70085407182); its
                                                       example timestamp is 2026-01-01
    source/_integrations/binary_sensor.markdown        @ 1e6bb74f7f826e2e766e87b1c86ccb80527fe640
    source/_integrations/button.markdown               @ 24b7bfbd0d6557f14a7627988cc4c74d9bb1c446
    source/_integrations/update.markdown               @ 812522810927094b1197fb29a4b523f68cb5935c
    source/_integrations/event.markdown                @ 6a717db7ebb9e73895de34e69d0b4ec703cb7c33
    home-assistant/developers.home-assistant docs/core/entity.md @ ee12b53159f877e8129969353010cc8757dd014f

Which doc version these sets describe:
  The seven *.mqtt pages at the commits above are all from BEFORE Home Assistant 2025.10.
  They list ``object_id``. They also have ``platform`` and "Required when used with
  device-based discovery" (so 2024.12 or later) and ``model_id`` (2024.8 or later).
  In 2025.10, home-assistant.io PR #40749 and core PR #151775 (both 2025-09-05, by jbouwh)
  replaced ``object_id`` with ``default_entity_id`` on every MQTT entity page. Core logs a
  deprecation for ``object_id`` saying it "will stop working in Home Assistant Core
  2026.4".
  The post-2025.10 text of sensor, binary_sensor, button, event, image and camera was checked
  against a stored Chinese translation of the docs. Its configuration YAML keys are verbatim
  English (store ids 56147531534, 56121183666, 56136458768, 56116117847, 56240976397,
  56259022545; mqtt page 56151267019). In those pages the only key change is
  object_id -> default_entity_id. No post-2025.10 copy of update.mqtt was found, so its
  current set below assumes the same single substitution.
  Result: ``PAGE_OPTIONS_AT_COMMIT`` is exactly what the pages at the listed commits say.
  ``CURRENT_PAGE_OPTIONS`` and ``DOCUMENTED_OPTIONS`` follow the 2025.10+ docs.
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------

HA_DOCS_REPO: Final = "home-assistant/home-assistant.io"

COMPONENTS: Final[tuple[str, ...]] = (
    "sensor",
    "binary_sensor",
    "button",
    "update",
    "event",
    "image",
    "camera",
    "switch",
)

DOC_URLS: Final[dict[str, str]] = {
    c: f"https://www.home-assistant.io/integrations/{c}.mqtt/" for c in COMPONENTS
} | {"mqtt": "https://www.home-assistant.io/integrations/mqtt/"}

# component -> (path in HA_DOCS_REPO, commit read)
DOC_SOURCES: Final[dict[str, tuple[str, str]]] = {
    "sensor": (
        "source/_integrations/sensor.mqtt.markdown",
        "9e4a69ab998700a518e366a7f54551a150fccf94",
    ),
    "binary_sensor": (
        "source/_integrations/binary_sensor.mqtt.markdown",
        "fbc3a3b3bdcce503437401c8ea500a3f72181fd8",
    ),
    "button": (
        "source/_integrations/button.mqtt.markdown",
        "d72255663705fa665050cd738a270e89f0ae8db3",
    ),
    "update": (
        "source/_integrations/update.mqtt.markdown",
        "d72255663705fa665050cd738a270e89f0ae8db3",
    ),
    "event": (
        "source/_integrations/event.mqtt.markdown",
        "172bcca0686c1765904a39065d10fa31cab295a1",
    ),
    "image": (
        "source/_integrations/image.mqtt.markdown",
        "23472596b17b3e4e94f1d589a9bdcafeeade92af",
    ),
    "camera": (
        "source/_integrations/camera.mqtt.markdown",
        "9e4a69ab998700a518e366a7f54551a150fccf94",
    ),
    "switch": (
        "source/_integrations/switch.mqtt.markdown",
        "53821638d65163c0c2cdb488b2d114de4c4dbc4b",
    ),
    "mqtt": (
        "source/_integrations/mqtt.markdown",
        "0a314403e71f72c2fa6fdcb51b28d4876b4ab7c2",
    ),
}

# --------------------------------------------------------------------------------------
# Per-page "Configuration Variables": top-level keys, exactly as listed at DOC_SOURCES
# (pre-2025.10 text, hence "object_id"). Written out key by key so each set can be
# checked against its page.
# --------------------------------------------------------------------------------------

PAGE_OPTIONS_AT_COMMIT: Final[dict[str, frozenset[str]]] = {
    "switch": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "command_template",
        "command_topic",
        "device",
        "device_class",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "optimistic",
        "payload_available",
        "payload_not_available",
        "payload_off",
        "payload_on",
        "platform",
        "qos",
        "retain",
        "state_off",
        "state_on",
        "state_topic",
        "unique_id",
        "value_template",
    }),
    "sensor": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "device",
        "device_class",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "expire_after",
        "force_update",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "last_reset_value_template",
        "name",
        "object_id",
        "options",
        "payload_available",
        "payload_not_available",
        "platform",
        "suggested_display_precision",
        "qos",
        "state_class",
        "state_topic",
        "unique_id",
        "unit_of_measurement",
        "value_template",
    }),
    "binary_sensor": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "device",
        "device_class",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "expire_after",
        "force_update",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "off_delay",
        "payload_available",
        "payload_not_available",
        "payload_off",
        "payload_on",
        "platform",
        "qos",
        "state_topic",
        "unique_id",
        "value_template",
    }),
    "button": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "command_template",
        "command_topic",
        "device",
        "device_class",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "payload_available",
        "payload_not_available",
        "payload_press",
        "platform",
        "qos",
        "retain",
        "unique_id",
    }),
    # NB: this update page lists no top-level payload_available / payload_not_available
    # (they appear only inside the `availability` list items). mqtt.markdown documents
    # them for every MQTT entity platform, so DOCUMENTED_OPTIONS adds them back.
    "update": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "command_topic",
        "device",
        "device_class",
        "display_precision",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "latest_version_template",
        "latest_version_topic",
        "name",
        "object_id",
        "payload_install",
        "platform",
        "qos",
        "release_summary",
        "release_url",
        "retain",
        "state_topic",
        "title",
        "unique_id",
        "value_template",
    }),
    "event": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "device",
        "device_class",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "event_types",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "payload_available",
        "payload_not_available",
        "platform",
        "qos",
        "state_topic",
        "unique_id",
        "value_template",
    }),
    # NB: the image and camera pages list no `platform`, `qos`, `payload_available` or
    # `payload_not_available`. This is still true in the post-2025.10 text.
    "image": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "content_type",
        "device",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "icon",
        "image_encoding",
        "image_topic",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "unique_id",
        "url_template",
        "url_topic",
    }),
    "camera": frozenset({
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "device",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "icon",
        "image_encoding",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "topic",
        "unique_id",
    }),
}

# object_id  (abbreviation "obj_id"): entity-id suggestion WITHOUT the domain, for example
#            "my_sensor". Documented up to 2025.9. Deprecated in 2025.10; core warns that it
#            "will stop working in Home Assistant Core 2026.4". "obj_id" no longer appears
#            in the newer mqtt.markdown abbreviation table.
# default_entity_id (abbreviation "def_ent_id"): 2025.10 and later. A FULL entity id,
#            WITH the domain, for example "sensor.foobar". Docs: "When used with a
#            `unique_id`, the `default_entity_id` is only used when the entity is added
#            for the first time. When set, this overrides a user-customized entity ID if
#            the entity was deleted and added again."
DEPRECATED_OPTIONS: Final[dict[str, str]] = {"object_id": "default_entity_id"}

# Post-2025.10 per-page sets: object_id swapped for default_entity_id. The mirror text
# confirms this for every component except "update", which is assumed (see the docstring).
CURRENT_PAGE_OPTIONS: Final[dict[str, frozenset[str]]] = {
    c: (opts - {"object_id"}) | {"default_entity_id"}
    for c, opts in PAGE_OPTIONS_AT_COMMIT.items()
}

# --------------------------------------------------------------------------------------
# Keys that mqtt.markdown documents for every component / every MQTT entity platform
# --------------------------------------------------------------------------------------

# mqtt.markdown, "Using Availability topics" > "Platform specific availability settings":
# "Platform specific availability settings are available for `mqtt` entity platforms only."
MQTT_PLATFORM_AVAILABILITY_OPTIONS: Final = frozenset({
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
})

# Keys that only appear in discovery (never in YAML) and are valid for every component:
#   origin   - "It is recommended to add information about the origin of MQTT entities by
#              including the `origin` option (abbreviated as `o`) in the discovery payload.
#              For device-based discovery, this information is required."
#   platform - per page: "Must be `<component>`. Only allowed and required in MQTT auto
#              discovery device messages". mqtt.markdown: "A `platform` (`p`) config option
#              is required for each component config". The camera and image pages leave
#              `platform` out, yet device discovery needs it for them as well.
DISCOVERY_ONLY_KEYS: Final = frozenset({"origin", "platform"})

# DOCUMENTED_OPTIONS: what a discovery payload for each component may carry, per the
# 2025.10+ docs. It is the page's "Configuration Variables" (CURRENT_PAGE_OPTIONS), plus
# the discovery-only keys, plus the availability keys mqtt.markdown documents for every
# MQTT entity platform.
# `platform` is allowed only inside a device-discovery `components` entry. The docs call
# it "Only allowed ... in ... device messages", so do not send it in single-component
# payloads.
DOCUMENTED_OPTIONS: Final[dict[str, frozenset[str]]] = {
    c: opts | DISCOVERY_ONLY_KEYS | MQTT_PLATFORM_AVAILABILITY_OPTIONS
    for c, opts in CURRENT_PAGE_OPTIONS.items()
}

# Options marked `required: true` on each page (or `required: exclusive`, for image).
# `platform` is required only in device-based discovery, and `unique_id` is "Required
# when used with device-based discovery" (the update page at its commit leaves that
# sentence out). Neither is listed here.
REQUIRED_OPTIONS: Final[dict[str, frozenset[str]]] = {
    "sensor": frozenset({"state_topic"}),
    "binary_sensor": frozenset({"state_topic"}),
    "button": frozenset({"command_topic"}),
    "update": frozenset(),  # state_topic and latest_version_topic are both optional
    "event": frozenset({"event_types", "state_topic"}),
    "image": frozenset(),  # exactly one of image_topic / url_topic; see EXCLUSIVE_REQUIRED
    "camera": frozenset({"topic"}),
    "switch": frozenset({"command_topic"}),
}
EXCLUSIVE_REQUIRED: Final[dict[str, frozenset[str]]] = {
    "image": frozenset({"image_topic", "url_topic"}),
}

# --------------------------------------------------------------------------------------
# Nested blocks
# --------------------------------------------------------------------------------------

# `device` map keys. All seven pages list the same 12 keys, and the post-2025.10 text
# is unchanged. "At least one of identifiers or connections must be present to identify
# the device." The device block "Only works when `unique_id` is set".
DEVICE_OPTIONS: Final = frozenset({
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
})

# `origin` map keys (mqtt.markdown, "Discovery payload"). `name` is "(Required)".
ORIGIN_OPTIONS: Final = frozenset({"name", "sw_version", "support_url"})
ORIGIN_REQUIRED: Final = frozenset({"name"})

# Keys of each item in the `availability` list. `topic` is required.
AVAILABILITY_OPTIONS: Final = frozenset({
    "topic",
    "payload_available",
    "payload_not_available",
    "value_template",
})
AVAILABILITY_MODES: Final = frozenset({"all", "any", "latest"})  # default "latest"

# --------------------------------------------------------------------------------------
# Device classes, state classes, entity categories
# --------------------------------------------------------------------------------------
# Each page also lists "None" (the generic default). In MQTT that is JSON null or an
# absent key, so "None" is not in these sets. Pick values with care: an unknown
# device_class is a validation error and the whole discovery config is rejected (see
# FACTS).

# sensor.markdown, newest stored copy (store id 70085407182; the store shows no commit).
SENSOR_DEVICE_CLASSES_NEWEST: Final = frozenset({
    "absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure",
    "battery", "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide",
    "conductivity", "current", "data_rate", "data_size", "date", "distance", "duration",
    "energy", "energy_distance", "energy_storage", "enum", "frequency", "gas", "humidity",
    "illuminance", "irradiance", "moisture", "monetary", "nitrogen_dioxide",
    "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1", "pm25", "pm4", "pm10",
    "power_factor", "power", "precipitation", "precipitation_intensity", "pressure",
    "radon", "reactive_energy", "reactive_power", "signal_strength", "sound_pressure",
    "speed", "sulphur_dioxide", "temperature", "temperature_delta", "timestamp", "uptime",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage", "volume",
    "volume_flow_rate", "volume_storage", "water", "weight", "wind_direction", "wind_speed",
})
# sensor.markdown @ 0015df1c81eea68f4c5f049863c72835b8b76997 (2025, before the newest copy).
# Core already had `conductivity` (sensor/const.py), but this page version left it out.
SENSOR_DEVICE_CLASSES_AT_0015DF1C: Final = SENSOR_DEVICE_CLASSES_NEWEST - frozenset({
    "conductivity", "pm4", "radon", "temperature_delta", "uptime",
})
# sensor.markdown @ 7450caca5f98bff566520400239f9e2ee525cb29 (oldest read, early 2025).
SENSOR_DEVICE_CLASSES_AT_7450CACA: Final = SENSOR_DEVICE_CLASSES_AT_0015DF1C - frozenset({
    "absolute_humidity", "energy_distance", "reactive_energy", "wind_direction",
})

DEVICE_CLASSES: Final[dict[str, frozenset[str]]] = {
    # The oldest page read: a device class newer HA added (uptime, temperature_delta, ...)
    # makes an older HA reject the whole config, and a doorbell is not upgraded in step.
    "sensor": SENSOR_DEVICE_CLASSES_AT_7450CACA,
    # binary_sensor.markdown @ 1e6bb74f7f826e2e766e87b1c86ccb80527fe640
    "binary_sensor": frozenset({
        "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
        "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
        "occupancy", "opening", "plug", "power", "presence", "problem", "running",
        "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
    }),
    # button.markdown @ 24b7bfbd0d6557f14a7627988cc4c74d9bb1c446
    "button": frozenset({"identify", "restart", "update"}),
    # update.markdown @ 812522810927094b1197fb29a4b523f68cb5935c
    "update": frozenset({"firmware"}),
    # event.markdown @ 6a717db7ebb9e73895de34e69d0b4ec703cb7c33
    "event": frozenset({"button", "doorbell", "motion"}),
    # switch.markdown: "outlet", "switch"
    "switch": frozenset({"outlet", "switch"}),
}

# Units a numeric sensor device class accepts (HA rejects the entity otherwise), for the
# classes this appliance uses: the "Supported units" column of
# https://developers.home-assistant.io/docs/core/entity/sensor/#available-device-classes
# (and sensor.markdown's device class list), from core's sensor/const.py
# DEVICE_CLASS_UNITS. "%" needs no device class.
SENSOR_UNITS: Final[dict[str, frozenset[str]]] = {
    "temperature": frozenset({"°C", "°F", "K"}),
    "duration": frozenset({"d", "h", "min", "s", "ms", "μs"}),
    "data_size": frozenset({"bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB",
                            "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"}),
    # sensor.markdown: "signal_strength: Signal strength in dB or dBm"
    "signal_strength": frozenset({"dB", "dBm"}),
}

# The newest sensor.markdown lists four state classes: "Measurement", "Measurement angle",
# "Total", "Total increasing". The keys are from core SensorStateClass (sensor/const.py).
# developers.home-assistant docs/core/entity/sensor.md @ 30def446 is older and lists only
# the first three without measurement_angle.
SENSOR_STATE_CLASSES: Final = frozenset({
    "measurement",
    "measurement_angle",
    "total",
    "total_increasing",
})

# developers.home-assistant docs/core/entity.md @ ee12b531: EntityCategory.CONFIG /
# EntityCategory.DIAGNOSTIC. The sensor.mqtt and binary_sensor.mqtt pages add: "When set,
# the entity category must be `diagnostic` for sensors."
ENTITY_CATEGORIES: Final = frozenset({"config", "diagnostic"})
ENTITY_CATEGORIES_ALLOWED: Final[dict[str, frozenset[str]]] = {
    c: (frozenset({"diagnostic"}) if c in ("sensor", "binary_sensor") else ENTITY_CATEGORIES)
    for c in COMPONENTS
}

# --------------------------------------------------------------------------------------
# FACTS FOR THE IMPLEMENTER (citations: mqtt.markdown @ 0a314403 unless stated)
# --------------------------------------------------------------------------------------
# Discovery topic: "<discovery_prefix>/<component>/[<node_id>/]<object_id>/config".
#   The prefix defaults to "homeassistant". <component> is an MQTT integration such as
#   "binary_sensor", or "device" for device-based discovery. <node_id> is optional and
#   not used by HA. node_id and object_id "must only consist of characters from the
#   character class [a-zA-Z0-9_-]". The topic's object_id "is not used for the
#   entity_id". The post-2025.10 text says to "use `default_entity_id` if you need to
#   control the `entity_id`". Best practice: object_id = unique_id, and leave node_id out.
# Payload: a JSON dict, "checked like an entry in your configuration.yaml ... with the
#   exception that unknown configuration keys are allowed but ignored". Core does this
#   with `extra=vol.REMOVE_EXTRA` in the DISCOVERY_SCHEMAs. An unknown KEY is dropped
#   silently. A bad VALUE of a known key (device_class, state_class, entity_category,
#   `options` without device_class enum, ...) fails validation, and the entity is not
#   created.
# Birth message: "When the MQTT integration starts, a birth message is published at
#   `homeassistant/status` by default". Devices should subscribe and (re)send discovery
#   on "online". HA "sends `online` and `offline` to `homeassistant/status`" (the
#   last-will message is "offline"). The docs recommend adding some random delay before
#   sending the discovery payload. Entities with a unique_id are unavailable after an HA
#   restart until discovery is received again. "MQTT items without a unique ID will not be
#   added at startup."
# Retain: discovery configs may be retained, so the broker replays them. After a config
#   is processed, state topics must be (re)published, either retained or sent again.
# Delete: "a configuration update with an empty payload will cause a previously
#   discovered device to be deleted". For device discovery: "publish an empty (retained)
#   string payload to the discovery topic", which also clears the retained config and
#   removes the device entry once nothing references it. A single component inside a
#   device payload is removed by sending it as {"p": "<platform>"} only.
# Device-based discovery: the root must include `device` (dev) and `origin` (o). Every
#   component needs `platform` (p). Entity components "must have set the `unique_id`
#   option and have a `device` context". At 0a314403 the prose says components go under
#   `components` "(abbreviated as `cmp`)", but the abbreviation table and every example
#   use "cmps". The newer text also says `cmps`. Use "cmps".
# availability_mode: "all" | "any" | "latest" (default "latest"). `availability` (a list)
#   "Must not be used together with `availability_topic`". payload_available and
#   payload_not_available default to "online" and "offline".
# Device sharing: other entities can link to a device by setting only the mandatory
#   fields, "at least one of `connection` and `identifiers` as well as the `name`".
# Naming: `name: null` marks the main feature of a device. Unnamed binary_sensor, button
#   and sensor entities are named after their device class.
# sensor: `options` needs device_class "enum" and "cannot be used together with
#   `state_class` or `unit_of_measurement`". last_reset_value_template needs state_class
#   "total". With a numeric device_class, state_class, unit or precision set, an empty
#   payload '' is ignored, and 'None' (newer text; the 9e4a69ab text said 'null') makes
#   the state unknown. expire_after is in seconds; retained sensor state is
#   discouraged when expire_after is used. entity_category must be "diagnostic".
# binary_sensor: payload_on and payload_off default to "ON" and "OFF". off_delay is in
#   seconds. entity_category must be "diagnostic".
# button: command_topic is required. payload_press defaults to "PRESS". Other keys:
#   command_template, retain (default false).
# update: state_topic may carry a plain installed_version string or JSON with
#   installed_version, latest_version, title, release_summary, release_url,
#   entity_picture, in_progress (bool) and update_percentage (0-100, null resets). Other
#   keys: latest_version_topic/_template; command_topic + payload_install to start an
#   install; display_precision for the progress value.
# event: event_types is required (the list of valid event_type strings). state_topic
#   payloads are JSON with an `event_type` that must be one of event_types; extra keys
#   become attributes. "Note that replayed retained messages will be discarded", so do
#   NOT retain event messages.
# image: exactly one of image_topic (raw image bytes; content_type defaults to
#   image/jpeg; image_encoding "b64" for base64) or url_topic (+ url_template). "This
#   option cannot be used together with the `url_topic` option". content_type "cannot
#   be used with the `url_topic`". The page says nothing about retaining; either works.
# camera: `topic` is required and carries raw image bytes (image_encoding "b64"
#   optional). The page lists no platform, qos or content_type.
# default_entity_id vs object_id: see DEPRECATED_OPTIONS. In newer docs the device
#   migration steps still say "Move the `object_id` inside the discovery payload"; that
#   sentence was not updated.
# Newer options not on the seven pages read: the 2026.5 time.mqtt and date.mqtt pages
#   (commits above) document `message_expiry_interval`. A stored pre-release copy of
#   core mqtt/schemas.py also has `visible_by_default` and `message_expiry_interval` in
#   the common entity schema. Neither is documented for our seven components, so neither
#   is in the sets above.

__all__ = [
    "AVAILABILITY_MODES",
    "AVAILABILITY_OPTIONS",
    "COMPONENTS",
    "CURRENT_PAGE_OPTIONS",
    "DEPRECATED_OPTIONS",
    "DEVICE_CLASSES",
    "DEVICE_OPTIONS",
    "DISCOVERY_ONLY_KEYS",
    "DOCUMENTED_OPTIONS",
    "DOC_SOURCES",
    "DOC_URLS",
    "ENTITY_CATEGORIES",
    "ENTITY_CATEGORIES_ALLOWED",
    "EXCLUSIVE_REQUIRED",
    "MQTT_PLATFORM_AVAILABILITY_OPTIONS",
    "ORIGIN_OPTIONS",
    "ORIGIN_REQUIRED",
    "PAGE_OPTIONS_AT_COMMIT",
    "REQUIRED_OPTIONS",
    "SENSOR_DEVICE_CLASSES_AT_0015DF1C",
    "SENSOR_DEVICE_CLASSES_AT_7450CACA",
    "SENSOR_DEVICE_CLASSES_NEWEST",
    "SENSOR_STATE_CLASSES",
]
