"""Study planning: pure functions (no Hydra, no torch) used by llem's sweeper and launcher."""
