"""Publishing to the Hugging Face Hub: model cards (`card`) and uploads (`upload`).

`write_model_card` writes the README.md of a saved model folder; `push_to_hub` uploads a saved folder;
`push_model_to_hub` does both for a model in memory and is what `model.push_to_hub(repo_id)` runs when this
package is installed. It takes every argument of transformers' `PushToHubMixin.push_to_hub` (4.46 and 5.x),
with the same meaning, plus the card's.
"""

from .card import find_variant, write_model_card
from .upload import push_model_to_hub, push_to_hub

__all__ = ["find_variant", "push_model_to_hub", "push_to_hub", "write_model_card"]
