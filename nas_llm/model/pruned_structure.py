"""Give a freshly built HF model the shapes of an extracted sub-network.

This module is self-contained (torch only) on purpose: extraction copies it into checkpoints whose
sub-network the family's HF config cannot express (fewer heads in BERT/GPT-2, different sizes per
layer, empty blocks), where it is loaded as remote code by
`AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)` (or the Auto class of the
model's task: `AutoModelForMultipleChoice`, `AutoModelForCausalLM`).

A structure is plain JSON stored in the config as `nas_pruned_structure`:
    {"layers": "<path of the layer list below model.base_model>",
     "params": {"<layer>.<param path>": [shape...]},        # every layer parameter's shape
     "attributes": {"<layer>.<module path>.<name>": int},    # e.g. GPT-2's split size
     "identity_blocks": [{"module": "<layer>.<path>", "residual_arg": [pos, name] | null,
                          "returns_tuple": bool}]}
"""

from __future__ import annotations

import torch
from torch import nn

STRUCTURE_KEY = "nas_pruned_structure"


def identity_forward(residual_arg: list | tuple | None, returns_tuple: bool):
    """A forward that makes a block the identity on the residual stream, without computing it.

    Post-LayerNorm blocks (BERT) include the residual, so the identity returns the residual input
    (`residual_arg`: its position and keyword name); pre-LayerNorm blocks return zeros, which the
    caller adds to the residual stream. Attention blocks return (hidden_states, None).
    """

    def forward(*args, **kwargs):
        hidden_states = args[0] if args else kwargs["hidden_states"]
        if residual_arg is None:
            output = torch.zeros_like(hidden_states)
        else:
            position, name = residual_arg
            output = args[position] if len(args) > position else kwargs[name]
        return (output, None) if returns_tuple else output

    return forward


def apply_pruned_structure(model: nn.Module, structure: dict) -> None:
    """Resize parameters, set size attributes and make empty blocks the identity, in place."""
    layers = model.base_model.get_submodule(structure["layers"])
    for path, shape in structure["params"].items():
        module_path, _, name = path.rpartition(".")
        module = layers.get_submodule(module_path)
        current = module._parameters[name]
        if tuple(current.shape) != tuple(shape):
            module._parameters[name] = nn.Parameter(
                torch.empty(shape, dtype=current.dtype, device=current.device), requires_grad=current.requires_grad
            )
    for path, value in structure["attributes"].items():
        module_path, _, name = path.rpartition(".")
        setattr(layers.get_submodule(module_path), name, value)
    for block in structure["identity_blocks"]:
        module = layers.get_submodule(block["module"])
        module.forward = identity_forward(block["residual_arg"], block["returns_tuple"])
