"""Meters that run beside energy=auto's choice (the node's BMC), one package each."""
