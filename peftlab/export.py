"""A trained run as a model that loads without peftlab: `python -m peftlab.export RUN_DIR OUT`.

Without `--adapter`, OUT is a merged float model: the method's weights merged into the base
(`AppliedMethod.merge`: peft adapters through `merge_to_float`; full, BitFit and head-only are
the trained model itself), saved with transformers' `save_pretrained`, so
`AutoModelFor....from_pretrained(OUT)` loads it. With `--adapter`, OUT is the adapter in
peft's format, naming its base portably (a hub id, the configured folder, or the backbone's
name), for `PeftModel.from_pretrained(base, OUT)`. Either way OUT holds the trained model's
config (the head's label names) and the tokenizer, in safetensors and JSON only. OUT is written
in a temporary folder beside it and renamed into place, so an interrupted export leaves no
half-written OUT."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from peftlab.errors import PeftlabError, RunError, Unsupported

log = logging.getLogger("peftlab")


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        written = export(Path(arguments.run_dir), Path(arguments.out), arguments.adapter, arguments.pretrained)
    except PeftlabError as error:
        print(f"peftlab: error: {error}", file=sys.stderr)
        return 2
    print(f"exported: {written}")
    return 0


def export(run_dir: Path, out: Path, adapter: bool, pretrained: str | None = None) -> Path:
    """Write the run's merged model, or with `adapter` its peft adapter, to `out`; return `out`."""
    from peftlab.backbones import base_reference
    from peftlab.predict import quiet_loading
    from peftlab.trained import NOT_AN_ADAPTER, read_run, serve, tokenizer_for

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} already exists and is not an empty folder: export into a new folder, or remove it first.")
    run = read_run(run_dir, pretrained)
    if adapter and run.peft_type is None:
        raise Unsupported(
            f"--adapter writes peft's format, and {run_dir} trained method={run.config.method.name}: {NOT_AN_ADAPTER}. "
            "Export the trained model without --adapter instead."
        )
    with quiet_loading():
        tokenizer = tokenizer_for(run)
        served = serve([run], tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if adapter:
            served.method.save(staging, base_reference(run.config.backbone))
        else:
            served.method.merge().save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m peftlab.export",
        description="Write a trained run as a model that loads with plain transformers (merged) or peft (--adapter).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (it holds result.json)")
    parser.add_argument("out", metavar="OUT", help="a new folder to write")
    parser.add_argument("--adapter", action="store_true", help="the adapter in peft's format instead of a merged model")
    parser.add_argument(
        "--pretrained", metavar="FOLDER_OR_HUB_ID",
        help="where this machine has the run's backbone weights, if not where the run read them",
    )
    return parser


def merge_to_float(model: PeftModel) -> torch.nn.Module:
    """Merge a trained adapter into its base and return a plain float model.

    On a quantized base peft's own merge re-quantizes the merged weights, adding a second
    rounding error to what was trained. Here the base is dequantized first, exactly as its
    forward pass dequantizes it, and the adapter is merged in float: the merged model computes
    what the trained one did, and is a float model (its linear weights take 8x the bytes of
    4-bit ones, 4x those of 8-bit ones), which this says rather than re-quantizing it silently. Quantize it again at load time if needed.
    Prompt and prefix tuning add context, not weights: they have nothing to merge. `model` is
    consumed, as by peft's `merge_and_unload`."""
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"merge_to_float merges a peft adapter (LoRA, DoRA, IA3) and got a {type(model).__name__}: "
            "peftlab's own methods (adapters, head_only, bitfit) keep their modules apart, with nothing to merge."
        )
    adapter = model.active_peft_config
    if adapter.is_prompt_learning:
        raise Unsupported(
            f"{adapter.peft_type.value} adds virtual tokens, not weights: there is nothing to merge. Export the "
            "adapter in peft's format instead (python -m peftlab.export RUN_DIR OUT --adapter)."
        )
    if not getattr(model.get_base_model(), "is_quantized", False):
        return model.merge_and_unload()
    quantized = model.get_base_model()
    quantization = quantized.config.quantization_config
    trained = {name: tensor.clone() for name, tensor in get_peft_model_state_dict(model).items()}
    # transformers' dequantize leaves these flags set, and peft's IA3 refuses even to unload with them
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):
        if hasattr(quantized, flag):
            delattr(quantized, flag)
    base = model.unload().dequantize(dtype=torch.float32)
    rewrapped = get_peft_model(base, adapter)
    set_peft_model_state_dict(rewrapped, trained)
    merged = rewrapped.merge_and_unload()
    bits = "4-bit" if quantization.load_in_4bit else "8-bit"
    log.warning(
        "the merged model is float32, not %s: its %s base was dequantized and the adapter merged in float "
        "(%.1f MB of weights). It was not re-quantized; pass a quantization_config when you load it to "
        "quantize it again.",
        bits, bits, sum(p.numel() * p.element_size() for p in merged.parameters()) / 2**20,
    )
    return merged


if __name__ == "__main__":
    sys.exit(main())
