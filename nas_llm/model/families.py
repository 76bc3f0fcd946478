"""Where the layers, attention heads and FFN neurons live in each supported HF model family.

This table is the only place in the project that knows family names. Masking, slicing,
parameter counting and extraction all read it, so adding a family means adding one entry
here (plus tests), not editing every module.

Vocabulary used throughout the project:
- a *head unit* is what the search space keeps or drops: one attention head for multi-head
  attention, one key/value group with all of its query heads for grouped-query attention
  (Llama, Qwen2, Mistral). Keeping whole groups keeps every sub-network a valid model of the
  same family: each kept KV head still serves the same number of query heads.
- a *neuron* is one unit of the FFN's hidden (intermediate) dimension; for gated MLPs it is a
  row of both the gate and the up projection and a column of the down projection.

Each layer parameter is described by the axis that a sub-network slices (`ParamAxis`):
- HEAD: rows/columns of query heads (or of the whole MHA head), head_dim entries each,
- KV_HEAD: rows of key/value heads (grouped-query attention),
- QKV_FUSED: GPT-2's fused `c_attn`, three hidden-size blocks [q | k | v] along the axis,
- QKV_PER_HEAD: GPT-NeoX's fused `query_key_value`, per head a block [q | k | v] of 3*head_dim,
- NEURON: FFN hidden units,
- ATTENTION_BLOCK / FFN_BLOCK: parameters (biases of the output projection, layer norms) that
  exist as long as the block keeps at least one head / neuron and vanish when it is skipped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import nn

from nas_llm.common.errors import UsageError


class ParamAxis(enum.Enum):
    HEAD = "head"
    KV_HEAD = "kv_head"
    QKV_FUSED = "qkv_fused"
    QKV_PER_HEAD = "qkv_per_head"
    NEURON = "neuron"
    ATTENTION_BLOCK = "attention_block"
    FFN_BLOCK = "ffn_block"


@dataclass(frozen=True)
class SlicedParam:
    """A layer parameter (path relative to the layer) and the axis a sub-network slices."""

    path: str
    axis: ParamAxis
    dim: int = 0


@dataclass(frozen=True)
class BlockSkip:
    """How to run a block (attention or FFN) as the identity when it keeps nothing.

    `module` is the block's module inside the layer. For post-LayerNorm families (BERT) the
    block includes the residual and the LayerNorm, so the identity returns the residual input
    (`residual_arg`: positional index and keyword name). For pre-LayerNorm families the
    residual is added outside the block, so the identity is a zero output (`residual_arg=None`).
    """

    module: str
    residual_arg: tuple[int, str] | None = None
    norms: tuple[str, ...] = ()  # pre-LN norms outside `module` that only feed it: passed through when skipped


@dataclass(frozen=True)
class Family:
    """Where one architecture keeps its layers, heads and neurons."""

    name: str
    model_types: tuple[str, ...]
    layers: str  # path from `model.base_model` to the nn.ModuleList of layers
    attention_out_proj: str  # input = concatenated query-head outputs
    ffn_down_proj: str  # input = FFN neurons
    attention_skip: BlockSkip
    ffn_skip: BlockSkip
    layer_params: tuple[SlicedParam, ...]
    decoder: bool = False  # classifies on the last non-pad token; needs a pad token
    attribute_overrides: tuple[tuple[str, str], ...] = field(default=())  # sizes kept as module attributes
    intermediate_size_key: str = "intermediate_size"  # the config field of the FFN width
    explicit_head_dim: bool = False  # the config has `head_dim`: fewer heads fit a standard config
    # Modules outside the layers that every token passes through (paths from `model.base_model`), where present.
    per_token_modules: tuple[str, ...] = ()
    # The last linear layer of the family's sequence-classification head (path from the model).
    classifier_output: str = "score"

    def skipped_modules(self, sub_network, layer: int) -> list[tuple[str, tuple[int, str] | None, bool]]:
        """(module path, residual_arg, returns_tuple) of every module a sub-network runs as the identity.

        An empty block returns its residual input (post-LN) or zeros (pre-LN); the pre-LN norms that
        only feed it pass their input through, so nothing of the block is computed.
        """
        skipped = []
        for keeps, skip, returns_tuple in (
            (sub_network.keeps_attention(layer), self.attention_skip, True),
            (sub_network.keeps_ffn(layer), self.ffn_skip, False),
        ):
            if not keeps:
                skipped.append((skip.module, skip.residual_arg, returns_tuple))
                skipped.extend((norm, (0, "hidden_states"), False) for norm in skip.norms)
        return skipped

    def num_layers(self, config) -> int:
        return config.num_hidden_layers

    def num_query_heads(self, config) -> int:
        return config.num_attention_heads

    def num_head_units(self, config) -> int:
        """Heads the search space keeps or drops: KV groups under grouped-query attention."""
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads

    def query_heads_per_unit(self, config) -> int:
        return self.num_query_heads(config) // self.num_head_units(config)

    def head_dim(self, config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def intermediate_size(self, config) -> int:
        size = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
        return size or 4 * config.hidden_size


def _bert_like(
    name: str, model_types: tuple[str, ...], classifier_output: str, per_token_modules: tuple[str, ...] = ()
) -> Family:
    return Family(
        name=name,
        model_types=model_types,
        layers="encoder.layer",
        attention_out_proj="attention.output.dense",
        ffn_down_proj="output.dense",
        attention_skip=BlockSkip("attention", residual_arg=(0, "hidden_states")),
        ffn_skip=BlockSkip("output", residual_arg=(1, "input_tensor")),
        layer_params=(
            SlicedParam("attention.self.query.weight", ParamAxis.HEAD, 0),
            SlicedParam("attention.self.query.bias", ParamAxis.HEAD, 0),
            SlicedParam("attention.self.key.weight", ParamAxis.HEAD, 0),
            SlicedParam("attention.self.key.bias", ParamAxis.HEAD, 0),
            SlicedParam("attention.self.value.weight", ParamAxis.HEAD, 0),
            SlicedParam("attention.self.value.bias", ParamAxis.HEAD, 0),
            SlicedParam("attention.output.dense.weight", ParamAxis.HEAD, 1),
            SlicedParam("attention.output.dense.bias", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("attention.output.LayerNorm.weight", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("attention.output.LayerNorm.bias", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("intermediate.dense.weight", ParamAxis.NEURON, 0),
            SlicedParam("intermediate.dense.bias", ParamAxis.NEURON, 0),
            SlicedParam("output.dense.weight", ParamAxis.NEURON, 1),
            SlicedParam("output.dense.bias", ParamAxis.FFN_BLOCK),
            SlicedParam("output.LayerNorm.weight", ParamAxis.FFN_BLOCK),
            SlicedParam("output.LayerNorm.bias", ParamAxis.FFN_BLOCK),
        ),
        per_token_modules=per_token_modules,
        classifier_output=classifier_output,
    )


def _llama_like(name: str, model_types: tuple[str, ...]) -> Family:
    # Biases exist only in some members (Qwen2 has q/k/v biases): params that a model lacks are skipped.
    return Family(
        name=name,
        model_types=model_types,
        layers="layers",
        attention_out_proj="self_attn.o_proj",
        ffn_down_proj="mlp.down_proj",
        attention_skip=BlockSkip("self_attn", norms=("input_layernorm",)),
        ffn_skip=BlockSkip("mlp", norms=("post_attention_layernorm",)),
        layer_params=(
            SlicedParam("input_layernorm.weight", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("self_attn.q_proj.weight", ParamAxis.HEAD, 0),
            SlicedParam("self_attn.q_proj.bias", ParamAxis.HEAD, 0),
            SlicedParam("self_attn.k_proj.weight", ParamAxis.KV_HEAD, 0),
            SlicedParam("self_attn.k_proj.bias", ParamAxis.KV_HEAD, 0),
            SlicedParam("self_attn.v_proj.weight", ParamAxis.KV_HEAD, 0),
            SlicedParam("self_attn.v_proj.bias", ParamAxis.KV_HEAD, 0),
            SlicedParam("self_attn.o_proj.weight", ParamAxis.HEAD, 1),
            SlicedParam("self_attn.o_proj.bias", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("post_attention_layernorm.weight", ParamAxis.FFN_BLOCK),
            SlicedParam("mlp.gate_proj.weight", ParamAxis.NEURON, 0),
            SlicedParam("mlp.up_proj.weight", ParamAxis.NEURON, 0),
            SlicedParam("mlp.down_proj.weight", ParamAxis.NEURON, 1),
            SlicedParam("mlp.gate_proj.bias", ParamAxis.NEURON, 0),
            SlicedParam("mlp.up_proj.bias", ParamAxis.NEURON, 0),
            SlicedParam("mlp.down_proj.bias", ParamAxis.FFN_BLOCK),
        ),
        decoder=True,
        explicit_head_dim=True,
    )


FAMILIES: tuple[Family, ...] = (
    _bert_like("bert", ("bert",), "classifier"),
    _bert_like("roberta", ("roberta", "xlm-roberta"), "classifier.out_proj"),
    # ELECTRA projects narrower embeddings to the hidden size (only when embedding_size != hidden_size).
    _bert_like("electra", ("electra",), "classifier.out_proj", per_token_modules=("embeddings_project",)),
    Family(
        name="gpt2",
        model_types=("gpt2",),
        layers="h",
        attention_out_proj="attn.c_proj",
        ffn_down_proj="mlp.c_proj",
        attention_skip=BlockSkip("attn", norms=("ln_1",)),
        ffn_skip=BlockSkip("mlp", norms=("ln_2",)),
        layer_params=(
            SlicedParam("ln_1.weight", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("ln_1.bias", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("attn.c_attn.weight", ParamAxis.QKV_FUSED, 1),  # Conv1D weights are (in, out)
            SlicedParam("attn.c_attn.bias", ParamAxis.QKV_FUSED, 0),
            SlicedParam("attn.c_proj.weight", ParamAxis.HEAD, 0),
            SlicedParam("attn.c_proj.bias", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("ln_2.weight", ParamAxis.FFN_BLOCK),
            SlicedParam("ln_2.bias", ParamAxis.FFN_BLOCK),
            SlicedParam("mlp.c_fc.weight", ParamAxis.NEURON, 1),
            SlicedParam("mlp.c_fc.bias", ParamAxis.NEURON, 0),
            SlicedParam("mlp.c_proj.weight", ParamAxis.NEURON, 0),
            SlicedParam("mlp.c_proj.bias", ParamAxis.FFN_BLOCK),
        ),
        decoder=True,
        attribute_overrides=(
            ("attn.split_size", "query_width"),
            ("attn.c_attn.nf", "qkv_width"),
            ("mlp.c_fc.nf", "neurons"),
        ),
        intermediate_size_key="n_inner",
    ),
    Family(
        name="gpt_neox",
        model_types=("gpt_neox",),
        layers="layers",
        attention_out_proj="attention.dense",
        ffn_down_proj="mlp.dense_4h_to_h",
        attention_skip=BlockSkip("attention", norms=("input_layernorm",)),
        ffn_skip=BlockSkip("mlp", norms=("post_attention_layernorm",)),
        layer_params=(
            SlicedParam("input_layernorm.weight", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("input_layernorm.bias", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("attention.query_key_value.weight", ParamAxis.QKV_PER_HEAD, 0),
            SlicedParam("attention.query_key_value.bias", ParamAxis.QKV_PER_HEAD, 0),
            SlicedParam("attention.dense.weight", ParamAxis.HEAD, 1),
            SlicedParam("attention.dense.bias", ParamAxis.ATTENTION_BLOCK),
            SlicedParam("post_attention_layernorm.weight", ParamAxis.FFN_BLOCK),
            SlicedParam("post_attention_layernorm.bias", ParamAxis.FFN_BLOCK),
            SlicedParam("mlp.dense_h_to_4h.weight", ParamAxis.NEURON, 0),
            SlicedParam("mlp.dense_h_to_4h.bias", ParamAxis.NEURON, 0),
            SlicedParam("mlp.dense_4h_to_h.weight", ParamAxis.NEURON, 1),
            SlicedParam("mlp.dense_4h_to_h.bias", ParamAxis.FFN_BLOCK),
        ),
        decoder=True,
    ),
    _llama_like("llama", ("llama", "mistral", "qwen2")),
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for family in FAMILIES for t in family.model_types)


def family_for_config(config) -> Family:
    """The family of a HF config, or a UsageError listing what is supported."""
    for family in FAMILIES:
        if config.model_type in family.model_types:
            return family
    raise UsageError(
        f"model type '{config.model_type}' is not supported; supported model types: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)}"
    )


def family_for(model: nn.Module) -> Family:
    return family_for_config(model.config)


def layers_of(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer layers."""
    return model.base_model.get_submodule(family_for(model).layers)


def layer_parameters(model: nn.Module, layer: nn.Module) -> list[tuple[SlicedParam, torch.Tensor]]:
    """The described parameters this layer actually has (families differ in their biases)."""
    own = dict(layer.named_parameters())
    return [(param, own[param.path]) for param in family_for(model).layer_params if param.path in own]
