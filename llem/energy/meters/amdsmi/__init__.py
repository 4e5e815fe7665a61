"""The amdsmi energy meter (meter.py)."""
