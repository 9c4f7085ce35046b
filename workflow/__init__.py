"""Run-level plumbing shared by the entry points (train, predict): loggers, config printing."""
