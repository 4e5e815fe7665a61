"""Process supervision for measured jobs (no Hydra): one fresh process per job, blocking waits,
timeouts and process-tree kills, Ctrl-C handling, health checks, GPU slots, manifest updates.

`hydra_plugins/llem_launcher` adapts this to Hydra's Launcher interface.
"""
