"""The intercom's sound: whether its ALSA devices exist, read from /proc/asound (an
injectable root), so a missing USB sound card or HAT is named in health, the log and `edge
doctor` instead of surfacing as silent calls (untested on a Pi's own sound hardware; tested
with recorded /proc/asound contents); and the announcement file, checked and padded for
baresip's aufile source.

Not responsible for: opening the devices (baresip's alsa module does, at each call).
"""

from __future__ import annotations

import re
import wave
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


ANNOUNCEMENT_RATE = 8000   # baresip's aufile wants the codec's rate (G.711: 8 kHz), mono, 16-bit
PAD_S = 3.0                # silence after the announcement: the source is switched back before it ends


def announcement_problem(path: str) -> str | None:
    """Why `path` cannot be the announcement, with the fix; None when it can."""
    try:
        with wave.open(path, "rb") as wav:
            shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
    except (OSError, wave.Error, EOFError) as exc:
        return f"[sip] announcement: cannot read {path} as a WAV file ({exc}); record or convert one, for example: " \
               f"sox in.mp3 -r 8000 -c 1 -b 16 {path}"
    if shape != (ANNOUNCEMENT_RATE, 1, 2):
        return (f"[sip] announcement: {path} is {shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]}-bit; baresip "
                f"needs 8000 Hz mono 16-bit: sox {path} -r 8000 -c 1 -b 16 converted.wav")
    return None


def padded_announcement(source: Path, dest: Path) -> float:
    """Copy the announcement with PAD_S of silence after it (baresip's menu hangs a call up
    when a file source ends); returns how long the announcement itself lasts."""
    with wave.open(str(source), "rb") as wav:
        params, frames = wav.getparams(), wav.readframes(wav.getnframes())
    tmp = dest.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setparams(params)
        out.writeframes(frames + b"\0\0" * int(PAD_S * ANNOUNCEMENT_RATE))
    tmp.replace(dest)
    return params.nframes / params.framerate
