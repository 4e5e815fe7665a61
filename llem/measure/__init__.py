"""The measured part of a job: the window, latency records and their statistics."""
