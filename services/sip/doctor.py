"""`edge doctor` checks of the intercom on an installed device: baresip is installed with
the modules the worker loads, and the configured ALSA devices exist."""

from __future__ import annotations

import os
import shutil

from edge.doctor import FAIL, OK, SKIP, Check, guarded
from services.sip.audio import missing_devices
from services.sip.baresip import MODULE_PATH

MODULES = ("ctrl_tcp.so", "menu.so", "g711.so", "aufile.so")


def _baresip(cfg) -> Check:
    if shutil.which(cfg.program) is None:
        return Check("sip", "baresip", FAIL, f"{cfg.program} is not installed", "sudo apt-get install baresip-core")
    missing = [m for m in MODULES if not os.path.exists(os.path.join(MODULE_PATH, m))]
    if missing:
        return Check("sip", "baresip", FAIL, f"baresip modules missing in {MODULE_PATH}: {', '.join(missing)}",
                     "sudo apt-get install --reinstall baresip-core")
    return Check("sip", "baresip", OK, f"{cfg.program} and its modules are installed")


def _audio(cfg) -> Check:
    problems = missing_devices(cfg)
    if problems:
        return Check("sip", "audio", FAIL, "; ".join(problems), "see the message")
    return Check("sip", "audio", OK, f"microphone {cfg.audio_source}, speaker {cfg.audio_sink}")


def checks(config) -> list[Check]:
    cfg = config["sip"]
    if not cfg.enabled:
        return [Check("sip", "intercom", SKIP, "off ([sip] enabled = false)")]
    return [guarded("sip", "baresip", lambda: _baresip(cfg)), guarded("sip", "audio", lambda: _audio(cfg))]
