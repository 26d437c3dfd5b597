"""ChatGPT recipe, rebuilt on the Hugging Face stack and measured at every step.

`pipeline run recipes/tiny.yaml` runs every stage; see README.md.
"""

__version__ = "0.1.0"
