"""Running backup and restore components on this machine (embedded mode): no pods, no Jobs.

``volumes`` maps a backup target's Kubernetes volumes to directories here; ``local`` runs each component as
a process of its own.
"""
