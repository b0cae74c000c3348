"""``ospo-gym data``: ``esci`` downloads the ESCI parquet files, ``hm`` prints the Kaggle steps for H&M or checks
the downloaded files."""

from __future__ import annotations

import argparse
import sys

from ospo_gym.output_files import check_output_folder


def add_options(parser: argparse.ArgumentParser) -> None:
    datasets = parser.add_subparsers(dest="dataset", required=True)
    esci = datasets.add_parser("esci", help="download the two ESCI parquet files (resumable, checksum-verified)")
    esci.add_argument("--dest", default=None, help="target folder (default: <$OSPO_GYM_DATA or ~/.cache/ospo-gym>/esci)")
    esci.add_argument(
        "--url-base",
        default=None,
        help="folder URL holding the files (default: the amazon-science/esci-data repository on GitHub)",
    )
    esci.add_argument("--force", action="store_true", help="download again even if verified files are there")
    esci.add_argument("--quiet", action="store_true", help="no progress bar")
    hm = datasets.add_parser("hm", help="print the Kaggle download steps for H&M, or check downloaded files")
    hm.add_argument("--verify", default=None, metavar="DIR", help="check the three CSV files in DIR")


def cmd_data(args: argparse.Namespace) -> int:
    return cmd_data_esci(args) if args.dataset == "esci" else cmd_data_hm(args)


def cmd_data_esci(args: argparse.Namespace) -> int:
    from ospo_gym.data.download import ESCI_URL_BASE, download_esci
    from ospo_gym.data.paths import data_root

    dest = check_output_folder(args.dest, what="--dest") if args.dest else data_root()[0] / "esci"
    url_base = args.url_base or ESCI_URL_BASE
    try:
        paths = download_esci(dest, url_base=url_base, force=args.force, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"ospo-gym: interrupted; rerun the same command to resume (partial files in {dest})", file=sys.stderr)
        return 130
    for path in paths:
        print(f"ok  {path}")
    hint = f'data_dir="{dest}"' if args.dest else "no data_dir needed (the default location)"
    print(f'Use it: gym.make("ospo/ESCI-v0", ...) with {hint}.')
    return 0


def cmd_data_hm(args: argparse.Namespace) -> int:
    from ospo_gym.data.hm_files import KAGGLE_STEPS, verify_hm
    from ospo_gym.data.paths import data_root

    if args.verify is None:
        print(KAGGLE_STEPS.replace("DEST", str(data_root()[0] / "hm")))
        return 0
    summary = verify_hm(args.verify)
    print(f"ok  {summary['folder']}")
    print(
        f"    {summary['articles']} articles, {summary['customers']} customers, {summary['transactions']} "
        f"transactions from {summary['first_day']} to {summary['last_day']}"
    )
    return 0
