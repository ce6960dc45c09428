"""`python -m segformer.pretrain` (what `accelerate launch -m segformer.pretrain` runs): `segformer pretrain`."""

import sys

from ..cli import main

sys.exit(main(["pretrain", *sys.argv[1:]]))
