"""The zeus energy meter (meter.py)."""
