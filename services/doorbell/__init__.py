"""The doorbell worker: button to chime, camera burst, face recognition of the visitor in a
child process, and the announcement."""
