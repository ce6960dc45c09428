"""The package's exceptions: one base class, one subclass per domain.

Library code raises these with a message that says what was wrong and what to do; the `segformer`
command turns them into one `segformer <command>: error: <message>` line and exit status 2. Each also
derives from the built-in exception that code catching errors by kind would expect (a bad value is a
`ValueError`, an unreadable or unwritable file an `OSError`, a failed export or upload a `RuntimeError`).
"""


class SegFormerError(Exception):
    """A problem the user can fix: a bad option, a missing or unreadable input, bad data."""


class OptionError(SegFormerError, ValueError):
    """An option, config-file key or argument value that is not valid."""


class InputError(SegFormerError, OSError):
    """A file, folder, image or model that is missing or cannot be read."""


class OutputError(SegFormerError, OSError):
    """An output file or folder that cannot be written."""


class DataError(SegFormerError, ValueError):
    """A dataset or sample that cannot be trained or evaluated on as it is."""


class ConversionError(SegFormerError, ValueError):
    """A checkpoint that cannot be converted, or a converted model that does not match its source."""


class ExportError(SegFormerError, RuntimeError):
    """A model that cannot be exported, or an export whose outputs differ from PyTorch's."""


class HubError(SegFormerError, RuntimeError):
    """A Hub operation (download, upload, repository creation) that failed."""


def error_chain(error: BaseException):
    """The error and the errors it was raised from or while handling, outermost first. Libraries wrap the
    error that says what happened (a Hub HTTP error inside an `OSError`): callers look for it here."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def chain_message(error: BaseException) -> str:
    """"Type: message; caused by Type: message; ..." of `error_chain(error)`, for one-line reports of
    another library's failure."""
    return "; caused by ".join(f"{type(cause).__name__}: {cause}" for cause in error_chain(error))


__all__ = [
    "ConversionError",
    "DataError",
    "ExportError",
    "HubError",
    "InputError",
    "OptionError",
    "OutputError",
    "SegFormerError",
    "chain_message",
    "error_chain",
]
