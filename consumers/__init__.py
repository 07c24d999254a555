"""Sinks and system connectors that subscribe to backbone's output topics."""
