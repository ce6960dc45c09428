"""Evaluation: the metrics people compare (`metrics`), the loop that `segformer evaluate` and `segformer
train` share (`engine`), the reports people read (`report`, `plots`), the model card's results
(`segformer.hub.results`) and the `segformer evaluate` command (`command`).

The submodules are imported where they are used: `segformer.metrics` imports `evaluation.metrics`, and
the engine imports `segformer.metrics`.
"""
