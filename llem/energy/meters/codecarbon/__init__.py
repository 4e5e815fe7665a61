"""The codecarbon energy meter (meter.py)."""
