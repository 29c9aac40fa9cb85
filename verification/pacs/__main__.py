"""``python -m verification.pacs search dicomweb+http://host:port/dicom-web [--modality CR]``: list studies
(or, with ``--study``, its series) without identifying tags, with the address to give ``cam`` / ``verify``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from verification.errors import VerificationError
from verification.pacs.client import PacsClient, PacsConfig, parse_source


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verification.pacs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("search", help="list studies (or one study's series) on a DICOMweb server")
    p.add_argument("server", help="dicomweb+http(s)://host:port/<DICOMweb root>")
    p.add_argument("--modality", help="e.g. CR, DX")
    p.add_argument("--body-part", help="e.g. CHEST")
    p.add_argument("--date", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    p.add_argument("--accession", help="accession number to match (never printed)")
    p.add_argument("--study", help="list this study's series instead")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--timeout", type=float, default=30.0, help="read timeout in seconds")
    args = parser.parse_args(argv)
    try:
        source = parse_source(args.server)
        config = PacsConfig.from_env(source, read_timeout=args.timeout)
        with PacsClient(config) as client:
            base = f"dicomweb+{source.root}/studies"
            if args.study:
                for s in client.search_series(args.study, modality=args.modality, body_part=args.body_part):
                    print(f"{s.label()}\n    {base}/{args.study}/series/{s.series_uid}")
                return 0
            studies = client.search_studies(
                modality=args.modality,
                body_part=args.body_part,
                date=args.date,
                accession=args.accession,
                limit=args.limit,
            )
            for st in studies:
                print(f"{st.label()}\n    {base}/{st.study_uid}")
            if not studies:
                print("no study matches", file=sys.stderr)
        return 0
    except VerificationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
