"""nas_llm: structural pruning of pre-trained language models by multi-objective NAS with weight sharing.

The entry scripts at the top of the repository orchestrate; this package holds everything they share, in
sub-packages ordered by stage (docs/architecture.md): common, data, model, training, search, extraction,
baselines, cloud. A sub-package imports only from itself and from those before it.
"""
