"""llem's Hydra sweeper: `hydra/sweeper=llem` (the default in llem's conf/config.yaml)."""
