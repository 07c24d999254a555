"""Connectors that publish canonical events: the emitter, time-tracker and ERP imports, the gateway."""
