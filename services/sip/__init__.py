"""The SIP intercom: the doorbell calls the house phones through baresip; a DTMF code opens the door."""
