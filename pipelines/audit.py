"""`medbridge audit TARGET`: is every artifact what the pipeline recorded?

    medbridge audit runs/kfp/medbridge-2026-11-29-10-00-00          # a run directory (kfp.local)
    medbridge audit runs/kfp/medbridge-…/grpo-…/model               # one artifact
    medbridge audit s3://mlpipeline/v2/artifacts/medbridge/<run-id> --json   # what a cluster run stored
    MEDBRIDGE_LINEAGE_KEY=… medbridge audit …                       # also authenticate the records (HMAC)

Recomputes each artifact's content hash, walks its history and checks every upstream artifact that can still be
found; prints one row per artifact (verified / tampered with the files that changed / missing / unverifiable) and
exits 1 when any artifact is tampered, 0 otherwise, 2 on bad input (one line). The logic is
components/common/audit.py; its docstring says what the audit proves with and without a key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "verify artifacts and their history against their lineage records (exit 1 on any tampered artifact)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="an artifact directory, a run directory, or an s3:// prefix")
    p.add_argument("--json", action="store_true", help="print the report as JSON (schema 'audit') instead of a table")
    p.add_argument("--key-file", default=None,
                   help="file holding the lineage signing key (default: MEDBRIDGE_LINEAGE_KEY / MEDBRIDGE_LINEAGE_KEY_FILE)")
    p.add_argument("--no-upstream", action="store_true", help="check the artifacts under TARGET only, not their history")


def run(args: argparse.Namespace) -> int:
    from components.common.audit import audit, audit_json, format_rows
    from components.common.lineage import signing_key
    from components.common.redact import redact_text

    try:
        key = Path(args.key_file).read_bytes().strip() if args.key_file else signing_key()
        report = audit(args.target, key=key or None, upstream=not args.no_upstream)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"medbridge audit: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    print(audit_json(report) if args.json else format_rows(report))
    return 1 if report.tampered else 0
