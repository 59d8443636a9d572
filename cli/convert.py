"""Convert a released uni2ts Moirai-MoE checkpoint into a moe-ts model folder.

    moe-ts convert --from uni2ts SRC --out DIR [--overwrite] [--license ID]

SRC is a local uni2ts folder (config.json + model.safetensors, e.g. a downloaded
`Salesforce/moirai-moe-1.0-R-small`) or, with network access, a Hugging Face Hub repo id (only those two
files are fetched). Every tensor is mapped or refused by name (see `moe_ts/uni2ts/convert.py`); the
converted model is loaded back strictly before it is written. DIR gets config.json, model.safetensors,
a model card crediting the source and conversion.json (source, its weights' SHA-256, the
compatibility settings, the licence), which every folder made from DIR carries on (moe_ts/io/provenance.py).
An existing DIR is replaced only when it is a converted model moe-ts wrote, or with --overwrite (replace
whatever it holds; never SRC itself).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from moe_ts.uni2ts.convert import CONFIG_NAME, WEIGHTS_NAME, Uni2tsConversionError, convert_uni2ts_folder
from moe_ts.model import MoiraiMoEModel
from moe_ts.io.hub import file_sha256, looks_like_hub_id
from moe_ts.io.output_dir import check_output_dir
from moe_ts.io.provenance import CONVERSION_FILE, UNI2TS_CREDIT, record_files


def resolve_source(src: str) -> Path:
    """A local folder as is; an `owner/name` Hub repo id downloaded (config.json and model.safetensors only)."""
    path = Path(src).expanduser()
    if not looks_like_hub_id(src):
        if not path.is_dir():
            raise Uni2tsConversionError(f"{src}: uni2ts checkpoint folder not found")
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=src, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, no access: one line naming the repo
        raise Uni2tsConversionError(f"{src}: not a local folder, and the Hub download failed "
                                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err


def source_card_text(src: str) -> str:
    """The model card's origin paragraph: where the weights come from and what the conversion set."""
    return (f"Weights converted from the uni2ts Moirai-MoE checkpoint `{src}` ({UNI2TS_CREDIT}) by "
            "`moe-ts convert --from uni2ts`. "
            "moe-ts did not train these weights; the source's licence and terms of use apply. The config mirrors "
            "uni2ts: centroid gate selecting the farthest experts, missing values entering as raw 0, uni2ts' time "
            "ids, and its variate attention bias for a group of series forecast jointly.")


def convert(source: str, src_format: str, out: str | Path, overwrite: bool = False, license: str | None = None) -> Path:
    """Convert `source` (local folder or Hub repo id) into the moe-ts folder `out`."""
    if src_format != "uni2ts":
        raise ValueError(f"--from {src_format!r}: only 'uni2ts' is supported")
    inputs = {"SRC": source}
    check_output_dir(out, overwrite, kind="converted", inputs=inputs)
    folder = resolve_source(source)
    conversion = convert_uni2ts_folder(folder)
    model = MoiraiMoEModel(conversion.config)
    model.load_state_dict(conversion.state_dict, strict=True)
    model.eval()
    card_kwargs: dict = {"model_name": Path(out).name, "origin": source_card_text(source),
                         "training": "None by moe-ts: the weights are converted (see the top of this card)."}
    if license:
        card_kwargs["license"] = license
    record = {"from": "uni2ts", "source": source, "source_weights_sha256": file_sha256(folder / WEIGHTS_NAME),
              "license": license,
              "compatibility": {"moe.gate": "centroid", "moe.centroid_select": "farthest",
                                "missing_values": "zero_raw", "time_ids": "observed", "variate_bias": True}}
    model.save_pretrained(out, model_card_kwargs=card_kwargs, overwrite=overwrite, folder_kind="converted",
                          inputs={**inputs, "SRC (downloaded)": folder},
                          extra_files=record_files({CONVERSION_FILE: record}), remedy="pass --overwrite to replace it")
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moe-ts convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="src_format", required=True, choices=["uni2ts"],
                        help="the source checkpoint's library")
    parser.add_argument("source", metavar="SRC", help="local uni2ts checkpoint folder or Hub repo id (needs network)")
    parser.add_argument("--out", required=True, help="model folder to write (a new, empty or moe-ts folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out whatever it holds (a user's files, a moe-ts folder of another kind)")
    parser.add_argument("--license", help="licence id for the card's metadata (default 'other': the source's terms apply)")
    args = parser.parse_args(argv)
    path = convert(args.source, args.src_format, args.out, args.overwrite, args.license)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
