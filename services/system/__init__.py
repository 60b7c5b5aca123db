"""The system worker: the device's own vital signs."""
