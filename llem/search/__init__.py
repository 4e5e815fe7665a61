"""Search, tracking and the Python API: objectives for Hydra's optimizing sweepers (Optuna), MLflow
tracking as a Hydra callback, `llem.run` / `llem.run_study` for notebooks (docs/search-tracking-api.md)."""
