"""`python -m segformer.train` (what `accelerate launch -m segformer.train` runs): `segformer train`."""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
