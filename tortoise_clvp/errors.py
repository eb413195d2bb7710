"""Errors the library raises for bad inputs: each message says what was wrong and what to do."""


class TortoiseClvpError(Exception):
    """Base class: anything the user can fix (inputs, files, options)."""


class InputTextError(TortoiseClvpError, ValueError):
    """The text cannot be spoken as given (empty, only punctuation, too long for the model)."""


class AudioError(TortoiseClvpError, ValueError):
    """A voice clip is missing, unreadable, empty or silent."""


class CheckpointError(TortoiseClvpError):
    """A weights file is missing, corrupt, of the wrong kind, or does not fit the model."""


class OptionsError(TortoiseClvpError, ValueError):
    """A generation option is out of range or inconsistent with another."""


def describe(error: BaseException, limit: int = 200) -> str:
    """'TypeName: first line of the message' (just the type when the message is empty), for error texts."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__
