"""Tensor surgery between layouts that split or fuse what ours keeps as one tensor.

Our attention keeps the original's single `kv` projection whose output rows are all keys, then all
values; transformers has separate `k`/`v` projections and mmsegmentation one q/k/v in-projection.
Each function takes and returns a state dict in our key names (with the intermediate names that the
tables in `mappings.py` produce).
"""

import re

import torch

from ..errors import ConversionError

_KEY_OR_VALUE = re.compile(r"^(?P<attn>.+\.attn)\.(?P<part>[kv])\.(?P<param>\w+)$")
_KEY_VALUE = re.compile(r"^(?P<attn>.+\.attn)\.kv\.(?P<param>\w+)$")
_QUERY_KEY_VALUE = re.compile(r"^(?P<attn>.+\.attn)\.qkv\.(?P<param>\w+)$")
_POINTWISE_CONV = re.compile(r"\.mlp\.fc[12]\.weight$")


def merge_key_value(state_dict: dict) -> dict:
    """`attn.k` + `attn.v` -> `attn.kv` (rows: keys, then values)."""
    merged, parts = {}, {}
    for key, tensor in state_dict.items():
        match = _KEY_OR_VALUE.match(key)
        if match:
            parts.setdefault((match["attn"], match["param"]), {})[match["part"]] = tensor
        else:
            merged[key] = tensor
    for (attn, param), pair in parts.items():
        if set(pair) != {"k", "v"}:
            missing = "value" if "k" in pair else "key"
            raise ConversionError(f"The checkpoint has no {missing} projection {param} for {attn}: it is incomplete.")
        merged[f"{attn}.kv.{param}"] = torch.cat([pair["k"], pair["v"]])
    return merged


def split_key_value(state_dict: dict) -> dict:
    """`attn.kv` -> `attn.k` + `attn.v`, the inverse of `merge_key_value`."""
    split = {}
    for key, tensor in state_dict.items():
        match = _KEY_VALUE.match(key)
        if match:
            split[f"{match['attn']}.k.{match['param']}"], split[f"{match['attn']}.v.{match['param']}"] = tensor.chunk(2)
        else:
            split[key] = tensor
    return split


def split_query_key_value(state_dict: dict) -> dict:
    """One in-projection `attn.qkv` (rows: queries, keys, values) -> `attn.q` + `attn.kv`."""
    split = {}
    for key, tensor in state_dict.items():
        match = _QUERY_KEY_VALUE.match(key)
        if not match:
            split[key] = tensor
            continue
        if tensor.shape[0] % 3:
            raise ConversionError(f"{key} has {tensor.shape[0]} rows, not queries, keys and values of equal size.")
        width = tensor.shape[0] // 3
        split[f"{match['attn']}.q.{match['param']}"] = tensor[:width]
        split[f"{match['attn']}.kv.{match['param']}"] = tensor[width:]
    return split


def squeeze_pointwise_convs(state_dict: dict) -> dict:
    """Mix-FFN 1x1 convolutions (out, in, 1, 1) -> the Linear weights (out, in) they equal."""
    squeezed = {}
    for key, tensor in state_dict.items():
        if _POINTWISE_CONV.search(key) and tensor.ndim == 4:
            if tensor.shape[-2:] != (1, 1):
                raise ConversionError(f"{key} is a {tuple(tensor.shape[-2:])} convolution, expected 1x1.")
            tensor = tensor.flatten(1)
        squeezed[key] = tensor
    return squeezed
