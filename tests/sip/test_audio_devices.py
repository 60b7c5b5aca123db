"""The intercom names a missing ALSA device, from recorded /proc/asound contents."""

from __future__ import annotations

from edge.config import SectionValues
from services.sip.audio import cards, missing_devices

PI_CARDS = """ 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones
                      bcm2835 Headphones
 1 [Device         ]: USB-Audio - USB PnP Sound Device
                      C-Media Electronics Inc. USB PnP Sound Device at usb-0000:01:00.0-1.3, full speed
"""


def sip(source, sink="discard"):
    return SectionValues("sip", {"audio_source": source, "audio_sink": sink}, {})


def asound(tmp_path, text):
    (tmp_path / "cards").write_text(text)
    return tmp_path


def test_cards_are_read_by_index_and_id(tmp_path):
    assert cards(asound(tmp_path, PI_CARDS)) == {"0": "Headphones", "1": "Device"}


def test_devices_that_exist_pass(tmp_path):
    root = asound(tmp_path, PI_CARDS)
    assert missing_devices(sip("alsa,plughw:1,0", "alsa,default"), root) == []
    assert missing_devices(sip("alsa,hw:CARD=Device,DEV=0"), root) == []
    assert missing_devices(sip("tone"), tmp_path / "nowhere") == []


def test_a_card_that_is_not_there_is_named_with_the_ones_that_are(tmp_path):
    [problem] = missing_devices(sip("alsa,plughw:2,0"), asound(tmp_path, PI_CARDS))
    assert "audio_source = \"alsa,plughw:2,0\"" in problem and "no sound card '2'" in problem
    assert "0 (Headphones), 1 (Device)" in problem


def test_no_card_at_all_says_what_to_do(tmp_path):
    problems = missing_devices(sip("alsa,default", "alsa,default"), asound(tmp_path, "--- no soundcards ---\n"))
    assert len(problems) == 2
    assert "set audio_source = \"tone\"" in problems[0] and "set audio_sink = \"discard\"" in problems[1]
