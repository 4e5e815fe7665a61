"""llem's Hydra launcher: `hydra/launcher=llem` (the default in llem's conf/config.yaml)."""
