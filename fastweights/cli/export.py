"""``fastweights export RUN_DIR --hf OUT``: a trained language-model run as a Hugging Face transformers model
directory (see :mod:`fastweights.hf.export`). Thin: checks the flags and calls :func:`fastweights.hf.export_run`."""

from __future__ import annotations

import json
import sys

from .args import run_dir


def _out_dir(text: str) -> str:
    from ..hf.export import check_output_dir

    check_output_dir(text, "--hf")
    return text


def export_command(args) -> int:
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ValueError(f"export --hf needs transformers and tokenizers ({e}): pip install 'fastweights[hf]'") from None
    from ..hf.export import export_run

    r = export_run(args.run_dir, args.hf, which=args.checkpoint)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"exported {r['layer']} language model ({r['checkpoint']} checkpoint, step {r['step']}, vocabulary "
              f"{r['vocab_size']:,}) to {r['out']}", file=sys.stderr)
        print(r["out"])
    return 0


def add_export_command(sub) -> None:
    e = sub.add_parser("export", help="export a language-model run as a Hugging Face transformers model directory")
    e.add_argument("run_dir", metavar="RUN_DIR", type=run_dir)
    e.add_argument("--hf", required=True, metavar="OUT", type=_out_dir,
                   help="new (or empty) directory for the transformers model: safetensors weights, config, tokenizer "
                        "(AutoModelForCausalLM / AutoTokenizer / pipeline load it)")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint (default best)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=export_command)
