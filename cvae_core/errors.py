"""Errors a user can act on: each message is one line that names the problem."""


class LabError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits 2; the app shows the message."""


class DataError(LabError):
    pass


class ConfigError(LabError):
    pass


class CheckpointError(LabError):
    pass
