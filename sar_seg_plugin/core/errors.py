"""Errors raised by the core. Algorithms turn them into QgsProcessingException with the same text."""


class SarSegError(ValueError):
    """A problem with the user's input, with a message that says what is wrong and how to fix it."""


class CancelledError(Exception):
    """The user cancelled the run; partial outputs have been removed."""
