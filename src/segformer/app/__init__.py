"""See a model work: a local web app (`segformer app`) and a ready-to-publish Hugging Face Space
(`segformer space`).

- segmenter.py: the model, its processor and card, the protocols and segmentation (no web code).
- ui.py: the Gradio page around it (imports gradio, so only `segformer app` loads it).
- command.py: the `segformer app` command.
- space.py: the `segformer space` command: writes and pushes a Space whose app.py is space_app.py, which
  needs only public packages (transformers, torch, gradio, pillow, numpy), never this one.
"""
