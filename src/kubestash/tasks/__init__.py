"""What backup and restore tasks run: the built-in Addon/Function catalog and resolving a session's task."""
