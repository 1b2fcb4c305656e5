"""The one exception the data layer raises for anything a user can fix in a config."""


class DataConfigError(ValueError):
    """A bad data configuration: the message says, in one sentence, what is wrong and how to fix it."""
