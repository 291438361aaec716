"""Restic-format repositories behind one interface (:mod:`kubestash.engine.base`)."""
