"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`, `BackboneTesterMixin`), taken from the
source distribution of the installed transformers version (see tests/transformers_suite.py), run against this
package's classes. A new transformers release that changes a convention fails here.

Deliberate differences, each with its reason. Every test named here is replaced below by one that checks
SegFormer's rule instead, or skipped with the reason as its message; every other common test runs as written.

ModelTesterMixin
- test_attention_outputs, test_hidden_states_output (replaced): they expect one (B, N, C) map per layer at one
  resolution. SegFormer is hierarchical: four stage maps (B, C_i, H/s_i, W/s_i) at strides 4-32, and one
  attention map per block whose keys are reduced by the stage's sr ratio. transformers' own SegFormer tests
  replace both for the same reason.
- test_num_layers_is_small (replaced): it allows 2 layers; a SegFormer has at least one block in each of its four
  stages. The tiny config has five (stage 2 has two, so per-block schedules are visible); the replacement
  holds it to one block per stage plus one, and test_model_is_small still bounds its size.
- test_model_get_set_embeddings (skipped): it checks token embeddings (`nn.Embedding`); images have none.
  transformers skips it for its SegFormer too.
- Not run at all: transformers' `ExportTesterMixin` (torch.export) and `GenerationTesterMixin` are in
  sub-packages the sdist leaves out; tests/test_export.py exports the models, and SegFormer does not generate.

BackboneTesterMixin
- test_config, test_channels, test_create_from_modified_config, test_config_save_pretrained (replaced):
  * no `out_features`/`out_indices` selects all four stages, not only the last: a SegFormer backbone feeds
    multi-scale heads (UperNet, the All-MLP decoder), and a segmentation checkpoint loaded with `AutoBackbone`
    should give them their inputs without arguments;
  * "stem" is in `stage_names` (transformers' layout) but cannot be selected: the patch embedding belongs to
    stage 1, so the stem would be the input image itself.
  Everything else these tests check (explicit selections, their alignment, the error on a mismatch, channels,
  save/load) is checked by the replacements.

The harness: transformers tells a class's task (base model, semantic segmentation, ...) by looking its name up in
its auto-mapping tables; ours are registered with `AutoModel.register`, which those tables do not list, so the
tests add our names to them while they run.
"""

import copy
import math
import sys
import tempfile
import unittest
from unittest import mock

import huggingface_hub
import pytest
import torch
from transformers.models.auto import modeling_auto
from transformers_suite import fetch_common_tests

from conftest import TINY_CONFIG
from segformer import (
    SegFormerBackbone,
    SegFormerConfig,
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerModel,
)

sys.path.insert(0, str(fetch_common_tests()))
# Defining `ModelTesterMixin` evaluates `require_flash_attn` & co., which (with the `kernels` package that
# transformers 5 installs) ask the Hub for flash-attention kernels. The session's local Hub is not started
# during collection, so that would hang: the import runs offline, where the answer is "no kernels" at once.
with mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True):
    from transformers_common_tests.test_backbone_common import BackboneTesterMixin
    from transformers_common_tests.test_configuration_common import ConfigTester
    from transformers_common_tests.test_modeling_common import ModelTesterMixin, floats_tensor

pytestmark = pytest.mark.slow

# Our class names in transformers' auto-mapping tables, under our model type.
AUTO_MAPPING_NAMES = {
    "MODEL_MAPPING_NAMES": SegFormerModel,
    "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES": SegFormerForSemanticSegmentation,
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES": SegFormerForImageClassification,
    "MODEL_FOR_BACKBONE_MAPPING_NAMES": SegFormerBackbone,
}
STAGE_STRIDES = [4, 8, 16, 32]


def list_in_auto_mappings(test: unittest.TestCase):
    for table, model_class in AUTO_MAPPING_NAMES.items():
        patcher = mock.patch.dict(getattr(modeling_auto, table), {SegFormerConfig.model_type: model_class.__name__})
        patcher.start()
        test.addCleanup(patcher.stop)


class SegFormerModelTester:
    """The tiny SegFormer of the suite (tests/conftest.py) and a batch of two 32x32 images."""

    def __init__(self, parent, batch_size=2, image_size=32):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_channels = 3
        self.is_training = True
        self.num_hidden_layers = sum(TINY_CONFIG["depths"])
        self.num_attention_heads = TINY_CONFIG["num_attention_heads"]
        self.hidden_sizes = TINY_CONFIG["hidden_sizes"]
        self.num_labels = TINY_CONFIG["num_labels"]

    def get_config(self, **overrides) -> SegFormerConfig:
        return SegFormerConfig(**{**TINY_CONFIG, **overrides})

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class SegFormerCommonTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SegFormerModel, SegFormerForSemanticSegmentation, SegFormerForImageClassification)
    test_resize_embeddings = False  # no token embeddings

    def setUp(self):
        list_in_auto_mappings(self)
        self.model_tester = SegFormerModelTester(self)
        # Without num_labels, which a config saves as id2label (the tester looks for it in the JSON).
        fields = {name: value for name, value in TINY_CONFIG.items() if name != "num_labels"}
        self.config_tester = ConfigTester(
            self, config_class=SegFormerConfig, has_text_modality=False,
            common_properties=["hidden_sizes", "num_attention_heads", "depths"], **fields,
        )  # fmt: skip

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_num_layers_is_small(self):
        config = self.model_tester.get_config()
        self.assertLessEqual(sum(config.depths), config.num_stages + 1)

    @unittest.skip("checks token embeddings (nn.Embedding); an image model has none")
    def test_model_get_set_embeddings(self):
        pass

    def expected_stage_sizes(self) -> list:
        size = self.model_tester.image_size
        return [math.ceil(size / stride) for stride in STAGE_STRIDES]

    def test_hidden_states_output(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        batch = self.model_tester.batch_size
        expected = [(batch, c, s, s) for c, s in zip(config.hidden_sizes, self.expected_stage_sizes())]
        for model_class in self.all_model_classes:
            for by_config in (False, True):
                config = self.model_tester.get_config(output_hidden_states=True) if by_config else config
                model = model_class(copy.deepcopy(config)).eval()
                with torch.no_grad():
                    outputs = model(**inputs) if by_config else model(**inputs, output_hidden_states=True)
                shapes = [tuple(t.shape) for t in outputs.hidden_states]
                self.assertEqual(shapes, expected, f"{model_class.__name__}, set by config: {by_config}")

    def test_attention_outputs(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        batch, sizes = self.model_tester.batch_size, self.expected_stage_sizes()
        expected = []
        for stage, (depth, heads, sr) in enumerate(zip(config.depths, config.num_attention_heads, config.sr_ratios)):
            queries, keys = sizes[stage] ** 2, (sizes[stage] // sr) ** 2  # keys: a kernel-sr stride-sr conv
            expected += [(batch, heads, queries, keys)] * depth
        for model_class in self.all_model_classes:
            for by_config in (False, True):
                config = self.model_tester.get_config(attn_implementation="eager")
                if by_config:
                    config.output_attentions = True
                model = model_class(config).eval()
                with torch.no_grad():
                    plain = model(**inputs)
                    outputs = model(**inputs) if by_config else model(**inputs, output_attentions=True)
                if not by_config:
                    self.assertIsNone(plain.attentions)
                shapes = [tuple(t.shape) for t in outputs.attentions]
                self.assertEqual(shapes, expected, f"{model_class.__name__}, set by config: {by_config}")
                for attention in outputs.attentions:  # probabilities over the keys
                    torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))


class SegFormerBackboneCommonTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (SegFormerBackbone,)
    config_class = SegFormerConfig

    def setUp(self):
        list_in_auto_mappings(self)
        self.model_tester = SegFormerModelTester(self)

    def test_config(self):
        config = SegFormerConfig()
        self.assertEqual(config.stage_names, ["stem", "stage1", "stage2", "stage3", "stage4"])
        for unset in (dict(), dict(out_features=None, out_indices=None)):
            config = SegFormerConfig(**unset)
            self.assertEqual((config.out_features, config.out_indices), (config.stage_names[1:], [1, 2, 3, 4]))
        config = SegFormerConfig(out_features=["stage1", "stage2"], out_indices=[1, 2])
        self.assertEqual((config.out_features, config.out_indices), (["stage1", "stage2"], [1, 2]))
        config = SegFormerConfig(out_features=["stage1", "stage3"])
        self.assertEqual(config.out_indices, [1, 3])
        config = SegFormerConfig(out_indices=[2, -1])
        self.assertEqual((config.out_features, config.out_indices), (["stage2", "stage4"], [2, 4]))
        for bad in (dict(out_features=["stage1", "stage2"], out_indices=[0, 2]), dict(out_features=["stem"]),
                    dict(out_indices=[0, 1]), dict(out_indices=[5]), dict(out_features=["stage5"])):  # fmt: skip
            with self.assertRaises(ValueError, msg=str(bad)):
                SegFormerConfig(**bad)

    def test_config_save_pretrained(self):
        config = SegFormerConfig(out_indices=[1, 3])
        with tempfile.TemporaryDirectory() as folder:
            config.save_pretrained(folder)
            loaded = SegFormerConfig.from_pretrained(folder)
        self.assertEqual(loaded.to_dict(), config.to_dict())
        self.assertEqual((loaded.out_features, loaded.out_indices), (["stage1", "stage3"], [1, 3]))

    def test_channels(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for selection, channels in ((dict(out_indices=[2, 4]), [16, 32]), (dict(out_features=None), [8, 16, 24, 32]),
                                    (dict(out_indices=None), [8, 16, 24, 32])):  # fmt: skip
            config = copy.deepcopy(config)
            for name, value in selection.items():
                setattr(config, name, value)
            backbone = SegFormerBackbone(config)
            self.assertEqual(backbone.channels, channels, str(selection))
            self.assertEqual(backbone.channels, [backbone.num_features[i] for i in backbone.out_indices])

    def test_create_from_modified_config(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        selections = ((dict(out_indices=[1, 3]), 2), (dict(out_features=None), 4), (dict(out_indices=None), 4))
        for selection, count in selections:
            config = copy.deepcopy(config)
            for name, value in selection.items():
                setattr(config, name, value)
            backbone = SegFormerBackbone(config).eval()
            with torch.no_grad():
                feature_maps = backbone(**inputs).feature_maps
            self.assertEqual(len(feature_maps), count, str(selection))
            self.assertEqual([m.shape[1] for m in feature_maps], backbone.channels)
