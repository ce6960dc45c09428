"""The one error type of the conversion: its message says what is wrong and what to do."""


class ConversionError(ValueError):
    """A checkpoint that cannot be converted, or a converted model that does not match its source."""
