"""Mapping tables applied to state dicts: a table is `{source template: target template}` (`mappings.py`),
with placeholders for stage and block numbers; `rename_keys` applies one and fails on any key it cannot
place, so nothing is dropped silently."""

import re

from ..errors import ConversionError

# A regex per placeholder of the mapping templates.
PLACEHOLDERS = {"i": r"\d+", "n": r"[1-9]\d*", "j": r"\d+", "param": r"[A-Za-z_]+", "any": r".+"}


def _with_param(template: str) -> str:
    return template if "{param}" in template else template + ".{param}"


def compile_template(template: str) -> re.Pattern:
    """`"block{n}.{j}.attn.q"` -> a regex matching `block1.0.attn.q.weight` with named groups."""
    pieces = re.split(r"\{(\w+)\}", _with_param(template))
    return re.compile(
        "".join(re.escape(piece) if k % 2 == 0 else f"(?P<{piece}>{PLACEHOLDERS[piece]})" for k, piece in enumerate(pieces))
    )


def fill_template(template: str, fields: dict) -> str:
    fields = dict(fields)
    # Stage numbers (from 1, as the original counts) and stage indices (from 0) convert both ways.
    if "n" in fields:
        fields["i"] = int(fields["n"]) - 1
    elif "i" in fields:
        fields["n"] = int(fields["i"]) + 1
    return _with_param(template).format(**fields)


def rename_keys(state_dict: dict, table: dict) -> tuple:
    """Apply a mapping table to every key. Returns (renamed state dict, dropped keys); fails listing
    every key that no template matches, so nothing is lost silently."""
    rules = [(compile_template(source), target) for source, target in table.items()]
    renamed, dropped, unmapped = {}, [], []
    for key, tensor in state_dict.items():
        match, target = next(((m, t) for pattern, t in rules if (m := pattern.fullmatch(key))), (None, None))
        if match is None:
            unmapped.append(key)
        elif target is None:
            dropped.append(key)
        else:
            new_key = fill_template(target, match.groupdict())
            if new_key in renamed:
                raise ConversionError(f"Two source tensors map to {new_key}; the checkpoint has duplicates.")
            renamed[new_key] = tensor
    if unmapped:
        raise ConversionError(
            f"{len(unmapped)} tensors of the checkpoint have no place in the model: {', '.join(unmapped[:20])}"
            f"{' ...' if len(unmapped) > 20 else ''}. The file is not a SegFormer checkpoint of this layout, "
            "or holds modules this converter does not know: pass the right `--format`, or `--encoder-only` to "
            "keep only the encoder."
        )
    return renamed, dropped


def inverse(table: dict) -> dict:
    return {ours: theirs for theirs, ours in table.items() if ours is not None}


def apply_aliases(state_dict: dict, aliases: dict) -> dict:
    """Bring alternative key prefixes (`backbone.`, a base model's missing `segformer.`) to the table's."""

    def canonical(key):
        prefix = next((p for p in aliases if key.startswith(p)), None)
        return key if prefix is None else aliases[prefix] + key[len(prefix) :]

    return {canonical(key): tensor for key, tensor in state_dict.items()}
