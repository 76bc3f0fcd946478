"""The model card (README.md) of an extracted sub-network: where it comes from, what it keeps, what it scores
and how to load it, so the checkpoint explains itself without the search's files."""

from __future__ import annotations

import json
from pathlib import Path

from nas_llm.data.multiple_choice import classifier_auto_class, saved_as_multiple_choice
from nas_llm.extraction.selection import shipped_test_metrics
from nas_llm.model.families import family_for_config
from nas_llm.model.label_scale import CONFIG_KEY, FOLDED_KEY, USAGE_KEY
from nas_llm.model.sub_network import SubNetwork


def _size_and_scores(results: dict, extraction: dict, cost_seq_len: int, num_choices: int | None) -> list[str]:
    point, unpruned = extraction["pareto_point"], results["unpruned"]
    per = f"sequence of {cost_seq_len} tokens" if num_choices is None else (
        f"example ({num_choices} choices of {cost_seq_len} tokens)"
    )
    rows = [
        "| | this model | unpruned super-network |",
        "|---|---|---|",
        f"| parameters | {extraction['num_parameters']:,} ({100 * point['params']:.1f}%) "
        f"| {unpruned['num_parameters']:,} |",
        f"| MACs per {per} | {point['macs']:,} | {unpruned['macs']:,} |",
        f"| validation error (the search's split) | {point['error']:.4f} | {unpruned['validation']['error']:.4f} |",
    ]
    test = shipped_test_metrics(extraction)
    rows += [f"| test {name} | {value:.4f} | {unpruned['test'][name]:.4f} |" for name, value in test.items()
             if name != "error"]
    if test is not extraction["test_extracted"]:  # a recovery step changed the weights: show where they started
        rows += [
            f"| test {name} before recovery | {value:.4f} | |"
            for name, value in extraction["test_extracted"].items() if name != "error"
        ]
    return rows


def _recovery(recovery: dict | None, lstsq_recovery: dict | None) -> list[str]:
    lines = [] if lstsq_recovery is None else [
        f"After extraction the kept heads and neurons were rescaled by layer-wise least squares on "
        f"{lstsq_recovery['num_calibration_samples']:,} training examples (Kwon et al. 2022, no training)."
        if lstsq_recovery.get("kept", True) else
        "Layer-wise least-squares rescaling of the kept heads and neurons (Kwon et al. 2022) raised the "
        "validation error, so it was left out.",
        "",
    ]
    if recovery is None:
        return lines
    settings = recovery["settings"]
    return lines + [
        f"After extraction the model was fine-tuned for {settings['epochs']} epoch(s) on "
        f"{recovery['num_train_examples']:,} training examples, distilled from `{settings['teacher']}` "
        f"(learning rate {settings['learning_rate']:g}, batch size {settings['batch_size']}, temperature "
        f"{settings['temperature']:g}); the weights here are the recovered ones.",
        "",
    ]


def _structure(sub_network: SubNetwork, config) -> list[str]:
    summary = sub_network.summary()
    family = family_for_config(config)
    grouped = family.query_heads_per_unit(config) > 1
    heads = "key/value groups (each with its query heads)" if grouped else "attention heads"
    kept_layers = [layer for layer in range(sub_network.num_layers) if sub_network.keeps_layer(layer)]
    return [
        f"- layers kept: {len(kept_layers)} of {sub_network.num_layers} ({', '.join(map(str, kept_layers))})",
        f"- {heads} per layer: {summary['heads_per_layer']}",
        f"- FFN neurons per layer: {summary['neurons_per_layer']}",
    ]


def _how_to_load(directory: str, custom_code: bool, architecture: str, auto_class: str) -> list[str]:
    remote = ", trust_remote_code=True" if custom_code else ""
    lines = [
        "```python",
        f"from transformers import {auto_class}, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{directory}")',
        f'model = {auto_class}.from_pretrained("{directory}"{remote})',
        "```",
        "",
    ]
    if custom_code:
        lines.append(
            "`trust_remote_code=True` is needed: the transformers config of this family cannot express the "
            f"sub-network's shapes, so `modeling_nas_pruned.py` (next to the weights, written by nas_llm) subclasses "
            f"`{architecture}` and applies the per-layer shapes recorded in `config.json`. Read it before trusting it."
        )
    else:
        lines.append(f"A standard `{architecture}` checkpoint: no `trust_remote_code` needed.")
    return lines


def _regression_output(directory: Path) -> tuple[str, list[str]]:
    """What the one output of a regression checkpoint means, from the config.json it was written with, and the
    lines that map it to the labels' scale where the model cannot."""
    saved = json.loads((directory / "config.json").read_text())
    if FOLDED_KEY in saved:
        scale = saved[FOLDED_KEY]
        return (
            "one regression output, on the scale of the task's labels (the training labels' mean "
            f"{scale['mean']:.4g} and standard deviation {scale['std']:.4g} are folded into the head's last layer; "
            f"`config.json` records them as `{FOLDED_KEY}`)", []
        )
    if USAGE_KEY in saved:
        return (
            "one regression output, standardised (this family's head has no bias to fold the labels' mean into); "
            f"map it to the labels' scale with the `{CONFIG_KEY}` of `config.json`", [
                "```python",
                f"scale = model.config.{CONFIG_KEY}",
                'prediction = model(**tokenizer(text, return_tensors="pt")).logits[..., 0] * scale["std"] + '
                'scale["mean"]',
                "```",
                "",
            ],
        )
    return "one regression output", []


def write_model_card(
    directory: str | Path, results: dict, extraction: dict, sub_network: SubNetwork, config
) -> None:
    """README.md in `directory`, from the search's results, the extraction report and the extracted config."""
    base_model = results.get("model_name_or_path") or "a pre-trained model"
    task = results.get("task_name") or "the user's data"
    custom_code = extraction["checkpoint_kind"] == "custom_code"
    architecture = (config.architectures or [type(config).__name__])[0].removeprefix("NasPruned")
    causal_lm = architecture.endswith(("ForCausalLM", "LMHeadModel"))  # --task_name lm
    multiple_choice = saved_as_multiple_choice(config)
    pipeline = "text-generation" if causal_lm else "multiple-choice" if multiple_choice else "text-classification"
    front_matter = ["---", "library_name: transformers", f"pipeline_tag: {pipeline}"]
    if not Path(base_model).exists():  # a hub id, not a local directory
        front_matter.append(f"base_model: {base_model}")
    front_matter += ["tags:", "- nas_llm", "- structured-pruning", "---"]
    labels, mapping = (
        (", ".join(f"`{index}`: {name}" for index, name in sorted(config.id2label.items())), [])
        if config.num_labels > 1 else _regression_output(Path(directory))
    )
    if multiple_choice:
        labels = f"one score per choice, {config.num_labels} choices (the label is the right choice's index: {labels})"
    lines = [
        *front_matter,
        "",
        "# A pruned causal language model (nas_llm sub-network)" if causal_lm
        else f"# A pruned {task} {'multiple-choice model' if multiple_choice else 'classifier'} (nas_llm sub-network)",
        "",
        f"A sub-network of `{base_model}`, fine-tuned on {task} as a weight-sharing super-network "
        f"(`{results.get('sampling_strategy')}` training) and taken from the Pareto set of a "
        f"`{results.get('search_strategy')}` search over the `{results.get('search_space')}` search space by "
        "nas_llm. Its weight matrices are genuinely smaller: removed layers, attention heads and FFN neurons are "
        "gone, not zeroed.",
        "",
        "## Size and scores",
        "",
        *_size_and_scores(
            results, extraction, results.get("cost_seq_len", 128), config.num_labels if multiple_choice else None
        ),
        "",
        *_recovery(extraction.get("recovery"), extraction.get("lstsq_recovery")),
        "## Sub-network",
        "",
        *_structure(sub_network, config),
        "",
        *([] if causal_lm else [f"Labels: {labels}.", "", *mapping]),
        "## How to load",
        "",
        *_how_to_load(
            str(Path(directory).resolve()), custom_code, architecture,
            "AutoModelForCausalLM" if causal_lm else classifier_auto_class(multiple_choice).__name__,
        ),
        "",
    ]
    (Path(directory) / "README.md").write_text("\n".join(lines))
