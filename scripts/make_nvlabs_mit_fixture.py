"""Write tests/fixtures/mmseg-segformer/mit-nvlabs.pth: the MiT encoder of the mmsegmentation fixture
(model-1.x.pth, see make_mmseg_fixture.py) in NVlabs' ImageNet layout, the layout of the `mit_bX.pth` files.

mmsegmentation reads that layout with its own converter, `tools/model_converters/mit2mmseg.py`
(`convert_mit`), which every mmseg SegFormer config relies on to start from NVIDIA's `mit_bX.pth`. This script
writes the NVlabs keys of the fixture's encoder (the inverse of that conversion, written here) and stops
unless mmseg's `convert_mit` turns them back into the fixture's backbone exactly: same keys, every tensor
equal. So the file is what mmseg takes for that encoder in NVlabs' layout, and tests/test_transfer.py checks
the package's NVlabs import and `--to nvlabs-mit` export against it (the mmseg checkpoint itself converts
to mmseg's logits, tests/test_mmseg.py).

Run it once, in the environment of make_mmseg_fixture.py (mmsegmentation 1.2.2 installs its tools with it):

    /tmp/mmseg-venv/bin/python scripts/make_nvlabs_mit_fixture.py tests/fixtures/mmseg-segformer
"""

import argparse
import importlib.util
import re
from pathlib import Path

import torch

# mmseg key (backbone, without its prefix) -> NVlabs key; stage indices from 0 in mmseg, from 1 in NVlabs.
# The attention's in-projection (queries, keys, values) and the 1x1-conv Mix-FFN are handled apart.
RENAMES = [
    (r"layers\.(\d+)\.0\.projection\.(\w+)", "patch_embed{n}.proj.{1}"),
    (r"layers\.(\d+)\.0\.norm\.(\w+)", "patch_embed{n}.norm.{1}"),
    (r"layers\.(\d+)\.1\.(\d+)\.(norm1|norm2)\.(\w+)", "block{n}.{1}.{2}.{3}"),
    (r"layers\.(\d+)\.1\.(\d+)\.attn\.attn\.out_proj\.(\w+)", "block{n}.{1}.attn.proj.{2}"),
    (r"layers\.(\d+)\.1\.(\d+)\.attn\.(sr|norm)\.(\w+)", "block{n}.{1}.attn.{2}.{3}"),
    (r"layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.0\.(\w+)", "block{n}.{1}.mlp.fc1.{2}"),
    (r"layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.1\.(\w+)", "block{n}.{1}.mlp.dwconv.dwconv.{2}"),
    (r"layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.4\.(\w+)", "block{n}.{1}.mlp.fc2.{2}"),
    (r"layers\.(\d+)\.2\.(\w+)", "norm{n}.{1}"),
]
IN_PROJECTION = re.compile(r"layers\.(\d+)\.1\.(\d+)\.attn\.attn\.in_proj_(\w+)")


def mmseg_convert_mit():
    """`convert_mit` of the installed mmsegmentation's tools/model_converters/mit2mmseg.py."""
    import mmseg

    path = Path(mmseg.__file__).parent / ".mim" / "tools" / "model_converters" / "mit2mmseg.py"
    spec = importlib.util.spec_from_file_location("mit2mmseg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.convert_mit


def to_nvlabs(backbone: dict) -> dict:
    """The NVlabs keys of an mmseg MixVisionTransformer state dict."""
    nvlabs = {}
    for key, tensor in backbone.items():
        match = IN_PROJECTION.fullmatch(key)
        if match:
            stage, block, param = int(match[1]) + 1, match[2], match[3]
            width = tensor.shape[0] // 3
            nvlabs[f"block{stage}.{block}.attn.q.{param}"] = tensor[:width].clone()
            nvlabs[f"block{stage}.{block}.attn.kv.{param}"] = tensor[width:].clone()
            continue
        for pattern, template in RENAMES:
            match = re.fullmatch(pattern, key)
            if match:
                groups = match.groups()
                name = template.replace("{n}", str(int(groups[0]) + 1)).format(*groups)
                if ".mlp.fc" in name and tensor.ndim == 4:  # NVlabs' Linear layers, mmseg's 1x1 convolutions
                    tensor = tensor.flatten(1)
                nvlabs[name] = tensor.clone().contiguous()
                break
        else:
            raise SystemExit(f"No NVlabs name for the mmseg key {key}.")
    return nvlabs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="The mmseg fixture folder (tests/fixtures/mmseg-segformer).")
    args = parser.parse_args()
    checkpoint = torch.load(args.folder / "model-1.x.pth", map_location="cpu", weights_only=True)
    backbone = {
        key.removeprefix("backbone."): tensor for key, tensor in checkpoint["state_dict"].items() if key.startswith("backbone.")
    }
    nvlabs = to_nvlabs(backbone)
    back = mmseg_convert_mit()(nvlabs)
    if set(back) != set(backbone):
        raise SystemExit(f"mmseg reads other keys: {sorted(set(back) ^ set(backbone))}")
    different = [key for key in backbone if not torch.equal(back[key], backbone[key])]
    if different:
        raise SystemExit(f"mmseg reads other tensors for {different}")
    torch.save(nvlabs, args.folder / "mit-nvlabs.pth")
    print(f"Wrote {len(nvlabs)} tensors; mmseg's convert_mit gives back all {len(backbone)} of the backbone exactly.")


if __name__ == "__main__":
    main()
