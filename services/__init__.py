"""The device's workers (doorbell, sip, printer, netbox, system), one package each. Workers
talk to each other only through the event bus, never by importing one another."""
