"""The controller runtime: informers, work queues, controllers and events shared by all reconcilers."""
