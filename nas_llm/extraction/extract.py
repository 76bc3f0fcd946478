"""Extract a sub-network as a genuinely smaller model and write it as a HF checkpoint.

The weights are those the sub-network keeps: exactly what `slicing.sliced` computes with, taken from
the super-network's state dict inside that context (dropped layers renumbered, removed rows and
columns gone). Never a full-size model with zeroed weights.

Two kinds of checkpoint:
- *standard*: the family's HF config can express the sub-network (fewer layers or none, one smaller FFN width
  for all kept layers, and fewer heads only in families whose config has an explicit `head_dim`, i.e.
  Llama / Mistral / Qwen2). `from_pretrained(dir)` loads it with the family's own class.
- *custom code*: everything else — fewer heads in BERT, RoBERTa, ELECTRA, GPT-2 or GPT-NeoX (their configs
  derive the head size from hidden_size / num_heads, and transformers 5 removed `prune_heads`), sizes that
  differ per layer (medium, large spaces), or a layer without attention or FFN block. The config then
  carries the per-layer shapes and an `auto_map` to `modeling_nas_pruned.py`, written next to the weights,
  which subclasses the family's class and applies the shapes; load it with
  `from_pretrained(dir, trust_remote_code=True)`.

A causal LM is written for `AutoModelForCausalLM` (its `auto_map` names that class) with the super-network's
generation config and the KV cache turned back on for `generate()`.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from nas_llm.data.multiple_choice import classifier_auto_class, is_multiple_choice, saved_as_multiple_choice
from nas_llm.model import pruned_structure
from nas_llm.model.families import Family, family_for, layer_parameters, layers_of
from nas_llm.model.label_scale import predicting_label_scale, unfold_label_scale
from nas_llm.model.models import save_model
from nas_llm.model.pruned_structure import STRUCTURE_KEY, apply_pruned_structure
from nas_llm.model.slicing import sliced
from nas_llm.model.sub_network import SubNetwork, keeps_param

REMOTE_CODE_MODULE = "modeling_nas_pruned"
SUB_NETWORK_FILE = "sub_network.json"


def describe_structure(model: nn.Module, sub_network: SubNetwork) -> dict[str, Any]:
    """The shapes, size attributes and identity blocks of the extracted model (layers renumbered)."""
    family = family_for(model)
    kept_layers = [index for index in range(sub_network.num_layers) if sub_network.keeps_layer(index)]
    structure = {"layers": family.layers, "params": {}, "attributes": {}, "identity_blocks": []}
    with sliced(model, sub_network):
        for new_index, layer in enumerate(layers_of(model)):
            old_index = kept_layers[new_index]
            for param, tensor in layer_parameters(model, layer):
                shape = list(tensor.shape)
                if not keeps_param(sub_network, old_index, param.axis):
                    shape[param.dim] = 0
                structure["params"][f"{new_index}.{param.path}"] = shape
            for path, _ in family.attribute_overrides:
                module_path, _, name = path.rpartition(".")
                structure["attributes"][f"{new_index}.{path}"] = getattr(layer.get_submodule(module_path), name)
            for path, residual_arg, returns_tuple in family.skipped_modules(sub_network, old_index):
                structure["identity_blocks"].append(
                    {"module": f"{new_index}.{path}", "residual_arg": residual_arg, "returns_tuple": returns_tuple}
                )
    return structure


def _standard_dimensions(family: Family, config, sub_network: SubNetwork) -> dict[str, int] | None:
    """Config fields that express the sub-network in the family's own config, or None if none can."""
    kept = [index for index in range(sub_network.num_layers) if sub_network.keeps_layer(index)]
    if not kept:  # embeddings and head alone: any config says that with no layers
        return {"num_hidden_layers": 0}
    if any(not (sub_network.keeps_attention(i) and sub_network.keeps_ffn(i)) for i in kept):
        return None
    head_units = {int(sub_network.head_mask[i].sum()) for i in kept}
    neurons = {int(sub_network.ffn_mask[i].sum()) for i in kept}
    if len(head_units) != 1 or len(neurons) != 1:
        return None
    units = head_units.pop()
    dimensions = {"num_hidden_layers": len(kept), family.intermediate_size_key: neurons.pop()}
    if units != family.num_head_units(config):
        if not family.explicit_head_dim:
            return None
        dimensions |= {
            "num_attention_heads": units * family.query_heads_per_unit(config),
            "num_key_value_heads": units,
            "head_dim": family.head_dim(config),
        }
    return dimensions


def _sliced_state_dict(model: nn.Module, sub_network: SubNetwork, structure: dict[str, Any]) -> dict:
    """The weights the sub-network keeps, under the extracted model's names; empty for removed blocks."""
    with sliced(model, sub_network):
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}.{structure['layers']}."
    for path, shape in structure["params"].items():
        if 0 in shape:
            state[prefix + path] = state[prefix + path].new_empty(shape)
    return state


def extract_sub_network(model: nn.Module, sub_network: SubNetwork) -> nn.Module:
    """A new, smaller model computing `sub_network` of `model` (same class, same dtype, eval mode)."""
    family = family_for(model)
    structure = describe_structure(model, sub_network)
    config = copy.deepcopy(model.config)
    kept_layers = [index for index in range(sub_network.num_layers) if sub_network.keeps_layer(index)]
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[index] for index in kept_layers]
    dimensions = _standard_dimensions(family, model.config, sub_network)
    if dimensions is None:
        config.num_hidden_layers = len(kept_layers)
        setattr(config, STRUCTURE_KEY, structure)
    else:
        for key, value in dimensions.items():
            setattr(config, key, value)
    extracted = type(model)(config)
    if dimensions is None:
        apply_pruned_structure(extracted, structure)
    extracted.load_state_dict(_sliced_state_dict(model, sub_network, structure), strict=True)
    if is_causal_lm(model):
        _enable_generation(extracted, model, all(sub_network.keeps_attention(index) for index in kept_layers))
    first_param = next(model.parameters())
    return extracted.to(device=first_param.device, dtype=first_param.dtype).eval()


def is_causal_lm(model: nn.Module) -> bool:
    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


def _enable_generation(extracted: nn.Module, model: nn.Module, every_layer_attends: bool) -> None:
    """The super-network's generation settings, with the KV cache back on (training and search ran without).

    A kept layer without attention never fills its cache layer, and a forward that is not given cache positions
    reads the sequence length off the first layer's cache. `generate()` passes them (tested), so it keeps the
    cache; a plain forward of such a model builds none unless asked to (`config.use_cache`).
    """
    extracted.generation_config = copy.deepcopy(model.generation_config)
    extracted.generation_config.use_cache = True
    extracted.config.use_cache = every_layer_attends


def _remote_code(base_class: type) -> str:
    """modeling_nas_pruned.py: the structure helpers plus a subclass of the family's HF class."""
    class_name = f"NasPruned{base_class.__name__}"
    return (
        inspect.getsource(pruned_structure)
        + f"\n\nfrom transformers import {base_class.__name__}\n\n\n"
        + f"class {class_name}({base_class.__name__}):\n"
        + '    """The family\'s HF class with the per-layer shapes of an extracted nas_llm sub-network."""\n\n'
        + "    def __init__(self, config, *args, **kwargs):\n"
        + "        super().__init__(config, *args, **kwargs)\n"
        + "        apply_pruned_structure(self, getattr(config, STRUCTURE_KEY))\n"
    )


def save_extracted(extracted: nn.Module, tokenizer, sub_network: SubNetwork, directory: str | Path) -> str:
    """Write the extracted model, its tokenizer and the sub-network; returns 'standard' or 'custom_code'."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    custom = getattr(extracted.config, STRUCTURE_KEY, None) is not None
    if custom:
        class_name = f"NasPruned{type(extracted).__name__}"
        auto_class = "AutoModelForCausalLM" if is_causal_lm(extracted) else (
            classifier_auto_class(is_multiple_choice(extracted)).__name__
        )
        extracted.config.auto_map = {auto_class: f"{REMOTE_CODE_MODULE}.{class_name}"}
        (directory / f"{REMOTE_CODE_MODULE}.py").write_text(_remote_code(type(extracted)))
    # Custom code loads without the library's renamings of legacy names (GPT-NeoX's embed_out -> lm_head), so
    # its weights are written under the names the model has today.
    with predicting_label_scale(extracted):
        save_model(extracted, directory, original_format=not custom)
    tokenizer.save_pretrained(directory)
    (directory / SUB_NETWORK_FILE).write_text(json.dumps(sub_network.to_json_dict()))
    return "custom_code" if custom else "standard"


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_extracted(directory: str | Path) -> nn.Module:
    """Load an extracted classifier of either kind (custom code is our own file, written by save_extracted), with
    the Auto class of its head (sequence classification or multiple choice); regression outputs standardised, as
    the project works with them (label_scale.py)."""
    auto_class = classifier_auto_class(saved_as_multiple_choice(AutoConfig.from_pretrained(str(directory))))
    return unfold_label_scale(auto_class.from_pretrained(str(directory), trust_remote_code=True).eval())

