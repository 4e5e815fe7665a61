"""The rapl energy meter (meter.py)."""
