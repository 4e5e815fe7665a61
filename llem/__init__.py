"""llem: measure the energy, speed and latency of LLM inference."""

__version__ = "0.1.0"
