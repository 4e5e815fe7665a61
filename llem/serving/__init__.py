"""The serving scenario: requests that arrive over time (arrival process, client, managed server, metrics)."""
