"""Exceptions the CLI turns into a one-line message and a non-zero exit status."""


class OedalError(Exception):
    """Base class for errors a user can fix (bad input, bad settings, unknown elements)."""


class InputError(OedalError, ValueError):
    """Bad input data; the message names the file and the structure index."""


class SettingsError(OedalError, ValueError):
    """Bad settings; the message names the key."""


class OutputError(OedalError, ValueError):
    """An output path that cannot be written (a folder where a file goes, a file where a folder goes,
    a folder without write permission); the message names the path."""
