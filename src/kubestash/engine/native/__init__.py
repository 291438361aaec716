"""Native restic-format engine (issue #7)."""
