"""The nvml energy meter (meter.py)."""
