"""Errors the project raises for a bad setting; with :class:`datamodules.errors.DatasetError`, the errors a run
reports as one clean message (:mod:`workflow.failure`)."""


class SettingError(ValueError):
    """A configuration value is out of range or inconsistent; the message names the setting (``data.num_folds``)."""
