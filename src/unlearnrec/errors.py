"""User-facing errors: one clear line, no traceback at the CLI."""


class UnlearnRecError(ValueError):
    """Raised for bad input (malformed file, unknown id, bad request, bad config).

    The CLI prints ``str(err)`` on one line to stderr and exits with status 2.
    """


class DataError(UnlearnRecError):
    """A dataset file is missing, malformed, or inconsistent."""


class ConfigError(UnlearnRecError):
    """A configuration file or value is invalid."""


class RequestError(UnlearnRecError):
    """An unlearning request is empty, duplicated, or names unknown edges, users or items."""


class TrainingError(RuntimeError):
    """Training diverged (NaN or inf loss)."""
