"""The doorbell's config sections: [doorbell] (button, chime, relay, LED), [camera] and
[faces], with their defaults, limits and sim profile values, and the check that tells a
person which pins clash. The runtime collects them from `DoorbellWorker.sections`.

Not responsible for: using the values (worker.py and the modules beside it), the checks of
the hardware itself (`edge doctor`: doctor.py).
"""

from __future__ import annotations

from edge.config import Key, Section
from hardware import gpio
from hardware.camera import BACKENDS


def check_doorbell(config, problems: list[str], warnings: list[str]) -> None:
    """What the schema alone cannot see: every part needs its own pin, and a button without a
    pull resistor must say which level a press puts on its pin."""
    cfg = config["doorbell"]
    pins = {"button_pin": cfg.button_pin, "chime_pin": cfg.chime_pin, "relay_pin": cfg.relay_pin}
    if cfg.led_pin >= 0:
        pins["led_pin"] = cfg.led_pin
    seen: dict[int, str] = {}
    for key, pin in pins.items():
        if pin in seen:
            problems.append(f"[doorbell] {key}: GPIO{pin} is already the {seen[pin]}; every part needs its own "
                            f"pin, for example: {key} = {max(pins.values()) + 1}")
        seen.setdefault(pin, key)
    if cfg.button_pull == "off" and cfg.button_active == "auto":
        problems.append("[doorbell] button_active: with button_pull = \"off\" say which level a pressed button "
                        "puts on the pin; for example: button_active = \"low\"")
    if cfg.button_pull != "off" and cfg.button_active != "auto":
        warnings.append(f"[doorbell] button_active = {cfg.button_active!r} is ignored with button_pull = "
                        f"{cfg.button_pull!r} (the pull decides it)")


DOORBELL_SECTION = Section("doorbell", (
    Key("enabled", bool, True, "run the doorbell"),
    Key("pin_factory", str, "lgpio", "gpiozero pin factory: lgpio on a Pi, mock for the simulator and tests",
        choices=gpio.PIN_FACTORIES, profiles={"sim": "mock"}),
    Key("button_pin", int, 17, "BCM number of the doorbell button", min=0, max=27),
    Key("button_pull", str, "up", "up: button to ground; down: button to 3V3; off: external resistor",
        choices=("up", "down", "off")),
    Key("button_active", str, "auto", "level of a pressed button when button_pull = \"off\"",
        choices=("auto", "low", "high")),
    Key("bounce_s", float, 0.05, "contact bounce filter (0: none)", min=0, max=1),
    Key("long_press_s", float, 2.0, "holding the button this long is a separate long_press event", min=0.2, max=30),
    Key("cooldown_s", float, 3.0, "a press this soon after a ring is counted but does not ring again", min=0,
        max=600),
    Key("chime_pin", int, 27, "BCM number of the chime output", min=0, max=27),
    Key("chime_s", float, 0.5, "how long the chime output is on per ring", min=0.05, max=10),
    Key("chime_active_high", bool, True, "false for chime drivers that switch on a low level"),
    Key("relay_pin", int, 22, "BCM number of the door relay output", min=0, max=27),
    Key("relay_active_high", bool, True, "false for relay boards that switch on a low level"),
    Key("relay_pulse_s", float, 3.0, "how long the door opens per authorized request", min=0.1, max=30),
    Key("led_pin", int, -1, "BCM number of the status LED (-1: none)", min=-1, max=27, profiles={"sim": 23}),
    Key("allow_remote_open", bool, False, "let Home Assistant or the intercom open the door (audited)"),
    Key("allow_remote_mute", bool, False, "show Home Assistant a \"Chime\" switch that mutes the chime "
        "(rings still reach Home Assistant; audited)"),
    Key("rang_recently_s", float, 60.0, "\"Rang recently\" stays on this long after the last ring", min=1),
), "the doorbell: button, chime, door relay, status LED", checks=(check_doorbell,))

CAMERA_SECTION = Section("camera", (
    Key("backend", str, "picamera2", "picamera2 (Pi camera), opencv (USB or RTSP), fake (simulator) or none",
        choices=(*BACKENDS, "none"), profiles={"sim": "fake"}),
    Key("source", str, "", "opencv: device index or stream URL; fake: a photo to show (empty: an empty porch)",
        example="rtsp://192.168.1.20:554/stream1"),
    Key("width", int, 1280, "frame width", min=160, max=4096),
    Key("height", int, 720, "frame height", min=120, max=3072),
    Key("burst", int, 5, "frames per ring; the sharpest with the largest face is kept", min=1, max=10),
    Key("idle_check_s", float, 30.0, "an idle camera takes one frame this often, so an unplugged camera shows "
        "in health and Home Assistant before the next ring (0: never)", min=0),
), "the doorbell camera")

FACES_SECTION = Section("faces", (
    Key("enabled", bool, True, "recognize visitors' faces (in a child process)"),
    Key("tolerance", float, 0.6, "largest face distance that still counts as a match (dlib: 0.6)", min=0.2,
        max=0.9),
    Key("min_face_px", int, 60, "smallest face height looked for, in pixels", min=20, max=1000),
    # Up to two minutes: a slow board (or emulation) takes seconds per burst; a bound, not a target.
    Key("timeout_s", float, 10.0, "a recognition taking longer is abandoned and the child restarted", min=1,
        max=120),
    Key("snapshot_dir", str, "", "where visitor snapshots are kept (default: <state dir>/snapshots)"),
    Key("snapshot_keep", int, 50, "most snapshots kept on disk", min=0),
    Key("snapshot_max_age_days", float, 7.0, "snapshots older than this are deleted", min=0.01),
    Key("allow_remote_enroll", bool, False, "allow \"this was Alice\" enrollment from Home Assistant"),
), "known faces and visitor snapshots")
