"""Errors that the CLI turns into one clear line on stderr."""


class ZooError(Exception):
    """Base class: the message says what went wrong and what to do."""


class UnknownNameError(ZooError, KeyError):
    """A name that no registry holds; the message lists the closest matches."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ZooError, ValueError):
    """A name or alias registered twice."""


class DatasetNotFoundError(ZooError, FileNotFoundError):
    """A dataset whose files are neither cached, nor in a manual dir, nor downloadable."""


class InvalidInputError(ZooError, ValueError):
    """Bad arguments: wrong shape, channels, weights, ..."""


class WeightsError(ZooError, ValueError):
    """Weights that cannot be found, verified or loaded."""
