"""Whether the intercom's ALSA devices exist, read from /proc/asound (an injectable root), so
a missing USB sound card or HAT is named in health, the log and `edge doctor` instead of
surfacing as silent calls. Untested on a Pi's own sound hardware; tested with recorded
/proc/asound contents.

Not responsible for: opening the devices (baresip's alsa module does, at each call).
"""

from __future__ import annotations

import re
from pathlib import Path

from services.sip.sections import DISCARD, TONE

_CARD = re.compile(r"^\s*(\d+)\s+\[(\S+)\s*\]", re.M)
_NAMED = re.compile(r"(?:plug)?hw:(?:CARD=)?([^,\s]+)")


def cards(asound: Path = Path("/proc/asound")) -> dict[str, str]:
    """{index: id} of the sound cards the kernel knows ("0": "Headphones", ...)."""
    try:
        text = (asound / "cards").read_text()
    except OSError:
        return {}
    return {index: ident for index, ident in _CARD.findall(text)}


def missing_devices(cfg, asound: Path = Path("/proc/asound")) -> list[str]:
    """One line per configured ALSA device that cannot exist here, naming the key and the fix."""
    problems = []
    found = cards(asound)
    for key in ("audio_source", "audio_sink"):
        value = cfg[key]
        if value in (TONE, DISCARD) or not value.startswith("alsa,"):
            continue
        device = value.split(",", 1)[1]
        named = _NAMED.match(device)
        if not found:
            problems.append(f"[sip] {key} = \"{value}\": no ALSA sound card is present (/proc/asound/cards is "
                            f"empty); plug in the sound card or HAT, or set {key} = "
                            f"\"{TONE if key == 'audio_source' else DISCARD}\"")
        elif named and named.group(1) not in found and named.group(1) not in found.values():
            listing = ", ".join(f"{i} ({n})" for i, n in sorted(found.items()))
            problems.append(f"[sip] {key} = \"{value}\": there is no sound card {named.group(1)!r}; the cards here "
                            f"are {listing} (`aplay -l`)")
    return problems
