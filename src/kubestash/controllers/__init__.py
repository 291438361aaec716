"""One reconciler per KubeStash kind: read the world, converge it, write status."""
