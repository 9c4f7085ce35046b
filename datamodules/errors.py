"""The one exception type that bad dataset input raises."""


class DatasetError(ValueError):
    """A dataset on disk is missing, malformed or inconsistent; the message names the file."""
