"""Run a HF model as one of its sub-networks on smaller weight matrices (the fast execution path).

Inside `sliced(model, sub_network)` every layer parameter is temporarily replaced by the part the
sub-network keeps: a view (`narrow`) where the kept units are a prefix (small, medium, layer
spaces), a gathered copy (`index_select`) otherwise (large space). Both are differentiable, so
gradients of a training step flow back into the shared super-network weights. Layers that keep
nothing are dropped from the layer loop, and empty blocks run as the identity (as in masking).
Selecting a sub-network costs a few tensor views: no model copy, and everything is restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from transformers.utils.output_capturing import maybe_install_capturing_hooks

from nas_llm.model.families import ParamAxis, family_for, layer_parameters, layers_of
from nas_llm.model.mask import masked, skipped_empty_blocks
from nas_llm.model.sub_network import SubNetwork, keeps_param, kept_index


def _slice(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    if torch.equal(index, torch.arange(len(index))):
        return tensor.narrow(dim, 0, len(index))
    return tensor.index_select(dim, index.to(tensor.device))


def _swap_parameter(module: nn.Module, name: str, replacement: torch.Tensor, stack: ExitStack) -> None:
    """Let `module.<name>` return `replacement` (a plain tensor) until the stack closes."""
    original = module._parameters[name]
    module._parameters[name] = replacement
    stack.callback(module._parameters.__setitem__, name, original)


def _swap_attribute(owner: object, name: str, value: object, stack: ExitStack) -> None:
    original = getattr(owner, name)
    setattr(owner, name, value)
    stack.callback(setattr, owner, name, original)


def _override_value(quantity: str, widths: dict[ParamAxis, int]) -> int:
    """Sizes some modules keep as attributes (GPT-2's split size and Conv1D output widths)."""
    return {
        "query_width": widths.get(ParamAxis.HEAD),
        "qkv_width": widths.get(ParamAxis.QKV_FUSED),
        "neurons": widths.get(ParamAxis.NEURON),
    }[quantity]


def _slice_layer(model: nn.Module, layer: nn.Module, index: int, sub_network: SubNetwork, stack: ExitStack) -> None:
    family = family_for(model)
    widths: dict[ParamAxis, int] = {}
    for param, tensor in layer_parameters(model, layer):
        if not keeps_param(sub_network, index, param.axis):
            continue
        kept = kept_index(family, model.config, sub_network, index, param.axis)
        if kept is None:
            continue
        widths[param.axis] = len(kept)
        if len(kept) < tensor.shape[param.dim]:
            module_path, _, name = param.path.rpartition(".")
            _swap_parameter(layer.get_submodule(module_path), name, _slice(tensor, param.dim, kept), stack)
    for path, quantity in family.attribute_overrides:
        module_path, _, name = path.rpartition(".")
        value = _override_value(quantity, widths)
        if value is not None:
            _swap_attribute(layer.get_submodule(module_path), name, value, stack)


@contextmanager
def sliced(model: nn.Module, sub_network: SubNetwork) -> Iterator[nn.Module]:
    """Context in which `model` computes `sub_network` on sliced weights; always restored on exit."""
    family = family_for(model)
    layers = layers_of(model)
    # transformers hooks the layers for output_hidden_states at the model's first forward; were that
    # forward sliced, the layers it dropped would never report their hidden states afterwards.
    maybe_install_capturing_hooks(model.base_model)
    with ExitStack() as stack:
        stack.enter_context(skipped_empty_blocks(model, sub_network))
        if getattr(model.config, "use_cache", False):  # a KV cache sized for all layers breaks on dropped ones
            _swap_attribute(model.config, "use_cache", False, stack)
        kept_layers = []
        for index, layer in enumerate(layers):
            if sub_network.keeps_layer(index):
                _slice_layer(model, layer, index, sub_network, stack)
                kept_layers.append(index)
        if len(kept_layers) < len(layers):
            parent_path, _, name = family.layers.rpartition(".")
            parent = model.base_model.get_submodule(parent_path)
            _swap_attribute(parent, name, nn.ModuleList(layers[i] for i in kept_layers), stack)
            layer_types = getattr(model.config, "layer_types", None)
            if layer_types is not None:  # per-layer attention kinds (Qwen2) are looked up by position
                _swap_attribute(model.config, "layer_types", [layer_types[i] for i in kept_layers], stack)
            if getattr(model.config, "use_cache", False):
                # A KV cache built for the fewer layers would be indexed by the kept layers' original
                # indices (Qwen2 in eval mode); a classifier's single forward needs no cache anyway.
                _swap_attribute(model.config, "use_cache", False, stack)
        yield model


SUB_NETWORK_RUNNERS = {"slice": sliced, "mask": masked}


def runner_for(name: str):
    """The context manager that runs a model as a sub-network: 'slice' (fast) or 'mask' (reference)."""
    return SUB_NETWORK_RUNNERS[name]
