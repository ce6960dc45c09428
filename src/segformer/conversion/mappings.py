"""Every SegFormer checkpoint layout, as data: how its keys map onto this package's.

A table maps a source key template to ours. Templates name the module path; the parameter name
(`weight`, `bias`, `running_mean`, ...) is carried over unless a template spells `{param}` itself.
Placeholders: `{i}` stage index (from 0), `{n}` stage number (from 1, as the original code counts),
`{j}` block index, `{any}` any rest of a key. A target of `None` drops the key (the reason is in `dropped`).

Some layouts split or merge tensors that ours keeps as one (keys then values in one `kv` projection):
their tables produce the intermediate names `attn.k`/`attn.v` or `attn.qkv`, which the named functions
in `surgery.py` resolve.
"""

from dataclasses import dataclass, field

from . import surgery


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    keys: dict  # source template -> our template, or None to drop
    signature: str  # regex that only this layout's keys match (after `aliases`)
    aliases: dict = field(default_factory=dict)  # key prefix -> canonical prefix, applied first
    dropped: str = ""  # why the keys mapped to None have no counterpart
    to_ours: tuple = ()  # surgery after renaming into our layout
    from_ours: tuple = ()  # surgery before renaming out of our layout (export)
    config: dict = field(default_factory=dict)  # settings the source model ran with


# transformers 4.x, the layout of the official Hub checkpoints (nvidia/mit-b*, nvidia/segformer-b*-*).
HF4_KEYS = {
    "segformer.encoder.patch_embeddings.{i}.proj":               "segformer.stages.{i}.patch_embed.proj",
    "segformer.encoder.patch_embeddings.{i}.layer_norm":         "segformer.stages.{i}.patch_embed.norm",
    "segformer.encoder.block.{i}.{j}.layer_norm_1":              "segformer.stages.{i}.blocks.{j}.norm1",
    "segformer.encoder.block.{i}.{j}.attention.self.query":      "segformer.stages.{i}.blocks.{j}.attn.q",
    "segformer.encoder.block.{i}.{j}.attention.self.key":        "segformer.stages.{i}.blocks.{j}.attn.k",
    "segformer.encoder.block.{i}.{j}.attention.self.value":      "segformer.stages.{i}.blocks.{j}.attn.v",
    "segformer.encoder.block.{i}.{j}.attention.self.sr":         "segformer.stages.{i}.blocks.{j}.attn.sr",
    "segformer.encoder.block.{i}.{j}.attention.self.layer_norm": "segformer.stages.{i}.blocks.{j}.attn.norm",
    "segformer.encoder.block.{i}.{j}.attention.output.dense":    "segformer.stages.{i}.blocks.{j}.attn.proj",
    "segformer.encoder.block.{i}.{j}.layer_norm_2":              "segformer.stages.{i}.blocks.{j}.norm2",
    "segformer.encoder.block.{i}.{j}.mlp.dense1":                "segformer.stages.{i}.blocks.{j}.mlp.fc1",
    "segformer.encoder.block.{i}.{j}.mlp.dwconv.dwconv":         "segformer.stages.{i}.blocks.{j}.mlp.dwconv",
    "segformer.encoder.block.{i}.{j}.mlp.dense2":                "segformer.stages.{i}.blocks.{j}.mlp.fc2",
    "segformer.encoder.layer_norm.{i}":                          "segformer.stages.{i}.norm",
    "decode_head.linear_c.{i}.proj":                             "decode_head.linear_c.{i}",
    "decode_head.linear_fuse":                                   "decode_head.linear_fuse.conv",
    "decode_head.batch_norm":                                    "decode_head.linear_fuse.bn",
    "decode_head.classifier":                                    "decode_head.linear_pred",
    "classifier":                                                "classifier",
}  # fmt: skip

# transformers 5.x.
HF5_KEYS = {
    "segformer.stages.{i}.patch_embeddings.proj":                                 "segformer.stages.{i}.patch_embed.proj",
    "segformer.stages.{i}.patch_embeddings.layer_norm":                           "segformer.stages.{i}.patch_embed.norm",
    "segformer.stages.{i}.blocks.{j}.layernorm_before":                           "segformer.stages.{i}.blocks.{j}.norm1",
    "segformer.stages.{i}.blocks.{j}.attention.q_proj":                           "segformer.stages.{i}.blocks.{j}.attn.q",
    "segformer.stages.{i}.blocks.{j}.attention.k_proj":                           "segformer.stages.{i}.blocks.{j}.attn.k",
    "segformer.stages.{i}.blocks.{j}.attention.v_proj":                           "segformer.stages.{i}.blocks.{j}.attn.v",
    "segformer.stages.{i}.blocks.{j}.attention.sequence_reduction.sequence_reduction": "segformer.stages.{i}.blocks.{j}.attn.sr",
    "segformer.stages.{i}.blocks.{j}.attention.sequence_reduction.layer_norm":    "segformer.stages.{i}.blocks.{j}.attn.norm",
    "segformer.stages.{i}.blocks.{j}.attention.o_proj":                           "segformer.stages.{i}.blocks.{j}.attn.proj",
    "segformer.stages.{i}.blocks.{j}.layernorm_after":                            "segformer.stages.{i}.blocks.{j}.norm2",
    "segformer.stages.{i}.blocks.{j}.mlp.fc1":                                    "segformer.stages.{i}.blocks.{j}.mlp.fc1",
    "segformer.stages.{i}.blocks.{j}.mlp.dwconv.dwconv":                          "segformer.stages.{i}.blocks.{j}.mlp.dwconv",
    "segformer.stages.{i}.blocks.{j}.mlp.fc2":                                    "segformer.stages.{i}.blocks.{j}.mlp.fc2",
    "segformer.stages.{i}.layer_norm":                                            "segformer.stages.{i}.norm",
    "decode_head.linear_projections.{i}.proj":                                    "decode_head.linear_c.{i}",
    "decode_head.linear_fuse":                                                    "decode_head.linear_fuse.conv",
    "decode_head.batch_norm":                                                     "decode_head.linear_fuse.bn",
    "decode_head.classifier":                                                     "decode_head.linear_pred",
    "classifier":                                                                 "classifier",
}  # fmt: skip

# NVlabs/SegFormer: segmentation checkpoints (encoder under `backbone.`) and ImageNet `mit_b*.pth` encoders.
ORIGINAL_KEYS = {
    "patch_embed{n}.proj":             "segformer.stages.{i}.patch_embed.proj",
    "patch_embed{n}.norm":             "segformer.stages.{i}.patch_embed.norm",
    "block{n}.{j}.norm1":              "segformer.stages.{i}.blocks.{j}.norm1",
    "block{n}.{j}.attn.q":             "segformer.stages.{i}.blocks.{j}.attn.q",
    "block{n}.{j}.attn.kv":            "segformer.stages.{i}.blocks.{j}.attn.kv",
    "block{n}.{j}.attn.sr":            "segformer.stages.{i}.blocks.{j}.attn.sr",
    "block{n}.{j}.attn.norm":          "segformer.stages.{i}.blocks.{j}.attn.norm",
    "block{n}.{j}.attn.proj":          "segformer.stages.{i}.blocks.{j}.attn.proj",
    "block{n}.{j}.norm2":              "segformer.stages.{i}.blocks.{j}.norm2",
    "block{n}.{j}.mlp.fc1":            "segformer.stages.{i}.blocks.{j}.mlp.fc1",
    "block{n}.{j}.mlp.dwconv.dwconv":  "segformer.stages.{i}.blocks.{j}.mlp.dwconv",
    "block{n}.{j}.mlp.fc2":            "segformer.stages.{i}.blocks.{j}.mlp.fc2",
    "norm{n}":                         "segformer.stages.{i}.norm",
    "head":                            "classifier",
    "decode_head.linear_c{n}.proj":    "decode_head.linear_c.{i}",
    "decode_head.linear_fuse.conv":    "decode_head.linear_fuse.conv",
    "decode_head.linear_fuse.bn":      "decode_head.linear_fuse.bn",
    "decode_head.linear_pred":         "decode_head.linear_pred",
    "decode_head.conv_seg":            None,
}  # fmt: skip

# mmsegmentation's SegFormer (0.x and 1.x, same keys): its `MixVisionTransformer` and its `SegformerHead`.
# The attention is nn.MultiheadAttention (one q/k/v in-projection) and the Mix-FFN uses 1x1 convolutions
# where the original has Linear layers. The head (a conv + BatchNorm + ReLU per stage, a fusing one, the
# classifier) is our decoder of kind "mmseg", whose modules carry mmseg's names.
MMSEG_KEYS = {
    "layers.{i}.0.projection":                 "segformer.stages.{i}.patch_embed.proj",
    "layers.{i}.0.norm":                       "segformer.stages.{i}.patch_embed.norm",
    "layers.{i}.1.{j}.norm1":                  "segformer.stages.{i}.blocks.{j}.norm1",
    "layers.{i}.1.{j}.attn.attn.in_proj_{param}": "segformer.stages.{i}.blocks.{j}.attn.qkv.{param}",
    "layers.{i}.1.{j}.attn.attn.out_proj":     "segformer.stages.{i}.blocks.{j}.attn.proj",
    "layers.{i}.1.{j}.attn.sr":                "segformer.stages.{i}.blocks.{j}.attn.sr",
    "layers.{i}.1.{j}.attn.norm":              "segformer.stages.{i}.blocks.{j}.attn.norm",
    "layers.{i}.1.{j}.norm2":                  "segformer.stages.{i}.blocks.{j}.norm2",
    "layers.{i}.1.{j}.ffn.layers.0":           "segformer.stages.{i}.blocks.{j}.mlp.fc1",
    "layers.{i}.1.{j}.ffn.layers.1":           "segformer.stages.{i}.blocks.{j}.mlp.dwconv",
    "layers.{i}.1.{j}.ffn.layers.4":           "segformer.stages.{i}.blocks.{j}.mlp.fc2",
    "layers.{i}.2":                            "segformer.stages.{i}.norm",
    "decode_head.convs.{i}.conv":              "decode_head.convs.{i}.conv",
    "decode_head.convs.{i}.bn":                "decode_head.convs.{i}.bn",
    "decode_head.fusion_conv.conv":            "decode_head.fusion_conv.conv",
    "decode_head.fusion_conv.bn":              "decode_head.fusion_conv.bn",
    "decode_head.conv_seg":                    "decode_head.linear_pred",
    "auxiliary_head.{any}":                    None,
}  # fmt: skip

# Config fields that transformers' SegformerConfig shares with ours (same names, same meaning). Its
# `layer_norm_eps` is not among them: transformers declares it but never reads it.
TRANSFORMERS_CONFIG_FIELDS = (
    "num_channels", "depths", "hidden_sizes", "num_attention_heads", "sr_ratios", "patch_sizes", "strides",
    "mlp_ratios", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob",
    "drop_path_rate", "initializer_range", "decoder_hidden_size", "semantic_loss_ignore_index",
)  # fmt: skip
# transformers' model class of each of ours.
TRANSFORMERS_CLASSES = {
    "SegFormerForSemanticSegmentation": "SegformerForSemanticSegmentation",
    "SegFormerForImageClassification": "SegformerForImageClassification",
    "SegFormerModel": "SegformerModel",
}

# The original and mmseg use LayerNorm eps 1e-6 in the blocks; the original keeps torch's 1e-5 after its
# strided convs, mmseg uses 1e-6 there too. transformers runs every LayerNorm at 1e-5.
TRANSFORMERS_EPS = dict(layer_norm_eps=1e-5, patch_layer_norm_eps=1e-5)

LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout(
            name="hf4",
            description="transformers 4.x (the official Hub checkpoints)",
            keys=HF4_KEYS,
            signature=r"^segformer\.encoder\.",
            aliases={"encoder.": "segformer.encoder."},
            to_ours=(surgery.merge_key_value,),
            from_ours=(surgery.split_key_value,),
            config=TRANSFORMERS_EPS,
        ),
        Layout(
            name="hf5",
            description="transformers 5.x",
            keys=HF5_KEYS,
            signature=r"^segformer\.stages\.\d+\.(patch_embeddings|blocks\.\d+\.attention)\.",
            aliases={"stages.": "segformer.stages."},
            to_ours=(surgery.merge_key_value,),
            from_ours=(surgery.split_key_value,),
            config=TRANSFORMERS_EPS,
        ),
        Layout(
            name="original",
            description="NVlabs/SegFormer .pth",
            keys=ORIGINAL_KEYS,
            signature=r"^patch_embed\d+\.proj\.",
            aliases={"backbone.": ""},
            dropped="the original decode head's `conv_seg` is created by mmseg's base class and never used",
            config=dict(layer_norm_eps=1e-6, patch_layer_norm_eps=1e-5),
        ),
        Layout(
            name="mmseg",
            description="mmsegmentation MixVisionTransformer (+ SegformerHead)",
            keys=MMSEG_KEYS,
            signature=r"^layers\.\d+\.0\.projection\.",
            aliases={"backbone.": ""},
            dropped="mmsegmentation's auxiliary head only trains: its inference never runs it",
            to_ours=(surgery.split_query_key_value, surgery.squeeze_pointwise_convs),
            config=dict(layer_norm_eps=1e-6, patch_layer_norm_eps=1e-6),
        ),
    )
}

# `--format` names: "hf" is either transformers layout, told apart by the keys.
FORMATS = {"hf": ("hf4", "hf5"), "original": ("original",), "mmseg": ("mmseg",)}
