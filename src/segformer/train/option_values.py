"""Option values given as text (a command line, a config file): lists of numbers and class weights."""

from ..errors import OptionError


def parse_numbers(name: str, values) -> list:
    """A list of numbers from a list or a comma-separated string; an OptionError naming the option."""
    items = values.split(",") if isinstance(values, str) else values
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError):
        raise OptionError(f"--{name.replace('_', '-')} takes numbers, got {values!r}.") from None


def parse_class_weights(value):
    """--class-weights: None ('none'), 'auto' (from the dataset audit) or one non-negative number per label
    ('w0,w1,...' or a list)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    weights = parse_numbers("class_weights", value)
    if not weights or any(not (0 <= w < float("inf")) for w in weights) or not any(w > 0 for w in weights):
        raise OptionError(
            f"--class-weights must be 'none', 'auto' or non-negative numbers w0,w1,... (not all 0), got {value!r}."
        )
    return weights
