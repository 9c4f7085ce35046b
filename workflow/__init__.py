"""Run-level plumbing shared by the entry points (train, predict): loggers, config printing."""

from workflow.run_dir import register_run_id

# ${run_id:} in the run folders' names (conf/hydra/default.yaml): known as soon as an entry point imports workflow
register_run_id()
