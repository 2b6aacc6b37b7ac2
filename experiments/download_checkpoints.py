#!/usr/bin/env python
"""Download the study's published checkpoints from Zenodo and file each into its stage's models/ folder.

Every file is checked against the record's md5 before it is moved into place, and every checkpoint is
opened with weights only (a file carrying code is refused) to tell which stage it belongs to:
pretrained encoders go to pretrain/<their method>/models (the study's: pretrain/simclr/models),
logistic-regression heads to downstream/logistic_regression/models, finetuned/baseline classifiers
to downstream/resnet/models.

    python scripts/download_checkpoints.py --list
    python scripts/download_checkpoints.py
    python scripts/download_checkpoints.py --include 'pretrain-*' 'downstream-bloodmnist-*'
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.cli.parsers import NON_NEGATIVE_INT, Parser
from experiments.download import DOWNLOADS, fetch_files, select
from experiments.zenodo import DEFAULT_API_URL, DEFAULT_RECORD, fetch_record, human_size, parse_record_id
from utils import OUTPUT_ROOT_VARIABLE, output_root


def record_id(text: str) -> str:
    try:
        return parse_record_id(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"must be an http(s) URL, got {text}")
    return text


def build_parser() -> Parser:
    parser = Parser(description="Download the study's checkpoints from Zenodo into each stage's models/ folder.")
    parser.add_argument("--record", type=record_id, default=DEFAULT_RECORD,
                        help=f"Zenodo record id, DOI or URL (default {DEFAULT_RECORD}, the study's checkpoints)")
    parser.add_argument("--api-url", type=http_url, default=DEFAULT_API_URL,
                        help=f"Zenodo REST API base, or a mirror serving the same paths (default {DEFAULT_API_URL})")
    parser.add_argument("--list", action="store_true", help="list the record's files and sizes; download nothing")
    parser.add_argument("--include", nargs="+", action="extend", metavar="PATTERN", default=None,
                        help="only files whose name matches one of these glob patterns, e.g. 'pretrain-*' "
                             "(quote them so the shell does not expand them)")
    parser.add_argument("--force", action="store_true", help="replace existing checkpoints that differ")
    parser.add_argument("--dest-root", type=Path, default=None,
                        help=f"folder holding the stage folders (default: the repository, or ${OUTPUT_ROOT_VARIABLE} "
                             "when set)")
    parser.add_argument("--retries", type=NON_NEGATIVE_INT, default=4,
                        help="retries per request on timeouts, dropped connections, HTTP 5xx and 429, with "
                             "exponential back-off (default 4)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    record = fetch_record(args.api_url, args.record, args.retries)
    files = select(record.files, args.include)
    if args.list:
        title = f": {record.title}" if record.title else ""
        print(f"Zenodo record {record.id}{title}")
        width = max((len(human_size(f.size)) for f in files), default=0)
        for file in files:
            print(f"  {human_size(file.size):>{width}}  {file.name}")
        print(f"{len(files)} file(s), {human_size(sum(f.size for f in files))} in total")
        return
    dest_root = args.dest_root.expanduser().absolute() if args.dest_root else None
    print(f"{len(files)} file(s), {human_size(sum(f.size for f in files))}, from Zenodo record {record.id} "
          f"into the stage folders under {dest_root or output_root()} (partial downloads in {DOWNLOADS}/)")
    report = fetch_files(files, dest_root, args.force, args.retries)
    print(report.summary())
    if not report.ok:
        raise SystemExit(2)
