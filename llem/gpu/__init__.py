"""GPU settings as sweep dimensions (issue 20): power limit, locked clocks and persistence applied to a
job's own GPUs before its model loads, always put back after it (records under llem's state folder, so the
next llem run repairs what a killed llem left), and adaptive thermal gaps between jobs.

Modules: `checks` (pure range checks of gpu.* and study.gaps/cool), `request` (gpu.* → what to set),
`records` (restore records), `apply` (check, apply, read back, restore: through llem.device's GPU API),
`cool` (adaptive gaps), `__main__` (`python -m llem.gpu restore|status`). docs/gpu-settings.md.
"""
