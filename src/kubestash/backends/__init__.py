"""Backup storage providers behind one interface (see :mod:`kubestash.backends.base`)."""
