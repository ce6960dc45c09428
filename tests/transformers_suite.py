"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`, `BackboneTesterMixin`) for the installed
transformers version, taken from that version's source distribution on the package registry.

The sdist carries `tests/test_modeling_common.py`, `tests/test_configuration_common.py` and
`tests/test_backbone_common.py` but not the three sub-packages they import (`tests/exporters`, `tests/generation`,
`tests/utils`). Those are replaced by the small stand-ins below, written here (not copied), and the gaps they
leave are listed in tests/test_transformers_common.py. Nothing of transformers' code is committed: the files are
fetched with `pip download` into a git-ignored cache on first use (a clean clone needs the registry once), and
are fetched again whenever the installed transformers version changes, so a new release is tested as it is.

`python tests/transformers_suite.py` fetches them ahead of a run (e.g. to prepare an offline machine).
"""

import inspect
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

# The cache sits in pytest's own cache folder, so `pytest --cache-clear` empties it too.
CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "d"
PACKAGE = "transformers_common_tests"
COMMON_FILES = ("test_modeling_common.py", "test_configuration_common.py", "test_backbone_common.py")

# Stand-ins for the modules the common files import but the sdist leaves out.
STAND_INS = {
    "__init__.py": "",
    # `ModelTesterMixin` derives from it; its torch.export tests are not in the sdist.
    "exporters/__init__.py": "",
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    # Only used in an `issubclass` check that tells generative models apart; SegFormer does not generate.
    "generation/__init__.py": "",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # `ConfigTester.check_config_arguments_init`: arguments every config takes, each set to a value other than
    # its default, which the config must keep. The values are ours; the keys are filtered against the
    # installed `PretrainedConfig` when the module is written.
    "utils/__init__.py": "",
}
COMMON_CONFIG_ARGUMENTS = dict(
    output_hidden_states=True,
    output_attentions=True,
    return_dict=False,
    dtype="float16",  # the tester compares `config.dtype` with torch.float16
    chunk_size_feed_forward=5,
    architectures=["SegFormerForSemanticSegmentation"],
    id2label={0: "road", 1: "sky"},
    label2id={"road": 0, "sky": 1},
    problem_type="single_label_classification",
)


def common_config_arguments() -> dict:
    """`COMMON_CONFIG_ARGUMENTS` restricted to what the installed `PretrainedConfig` takes: its `__init__`
    arguments, and `output_attentions` (a property of the config since transformers 5)."""
    accepted = set(inspect.signature(transformers.PretrainedConfig.__init__).parameters) | {"output_attentions"}
    return {key: value for key, value in COMMON_CONFIG_ARGUMENTS.items() if key in accepted}


def fetch_common_tests(version: str = transformers.__version__, cache: Path = CACHE) -> Path:
    """The folder to put on `sys.path` to import `transformers_common_tests.test_modeling_common` and its two
    siblings for transformers `version`, downloading the sdist on first use. Raises RuntimeError with what went
    wrong when the registry cannot be reached or the sdist has no tests."""
    folder = cache / f"transformers-{version}-common-tests"
    package = folder / PACKAGE
    ready = package / "ready"
    if ready.exists():
        return folder
    with tempfile.TemporaryDirectory() as download:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
            f"transformers=={version}", "--dest", download,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(download).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"Could not download the source distribution of transformers {version} (for its common tests) "
                f"with `{' '.join(command[2:])}`:\n{result.stderr.strip()}\nThe package registry must be reachable "
                f"once, or run `python tests/transformers_suite.py` where it is and copy {folder}."
            )
        package.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            names = set(archive.getnames())
            paths = {name: f"transformers-{version}/tests/{name}" for name in COMMON_FILES}
            missing = [path for path in paths.values() if path not in names]
            if missing:
                raise RuntimeError(f"The sdist of transformers {version} lacks {', '.join(missing)}.")
            for name, path in paths.items():
                (package / name).write_bytes(archive.extractfile(path).read())
    for name, text in STAND_INS.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    arguments = f"config_common_kwargs = {common_config_arguments()!r}\n"
    (package / "utils" / "test_configuration_utils.py").write_text(arguments)
    ready.write_text(version)
    return folder


if __name__ == "__main__":
    print(fetch_common_tests())
