"""Errors that main.py reports as one clear message and a non-zero exit."""


class DMMLError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ConfigError(DMMLError, ValueError):
    """A config file, key or value is not what was expected (also a ValueError: the
    settings' dataclasses check the arguments of `DM2Model` too)."""


class DataError(DMMLError):
    """A dataset, its files or a tool needed to build it is missing or broken."""


class WeightsError(DMMLError):
    """Pretrained weights are missing, unreadable or unsafe."""


class TrainingError(DMMLError):
    """Training diverged (a non-finite loss); the message says what was kept."""


class ClusterError(DMMLError):
    """A worker of a multi-machine job stopped; the message says how to resume."""


class InUseError(DMMLError):
    """A run directory is in use by another process (named in the message)."""
