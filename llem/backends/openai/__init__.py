"""openai backend: knobs (config.py), checks (checks.py), engine (backend.py)."""
