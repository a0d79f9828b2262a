"""``pets-lite-deid IN OUT --key-file KEY``: de-identify a DICOM file or a study folder.

Exit status: 0 when every DICOM file was de-identified, 1 when any failed (the others are still
written), 2 when nothing was done (a usage error, an existing output, a missing or open key file).
The per-file report (``--report out.json`` or ``out.csv``) lists, for each input file, what was
done: the actions applied, the text rows masked, the transfer syntax written, the failure. It links
input paths (which often hold patient IDs) to outputs: keep it with the key, not with the data;
it is written readable by its owner only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .. import config
from .actions import Report
from .files import deidentify_file
from .folders import deidentify_folder
from .keys import DeidError, new_key_file, read_key_file
from .profile import PROFILES

#: The columns of the per-file report.
COLUMNS = ("source", "output", "status", "error", "actions", "text_rows_masked",
           "overlay_text_rows", "pixels_checked", "transfer_syntax", "syntax_note", "seconds")


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(
        prog="pets-lite-deid", description="De-identify DICOM files (PS3.15 Annex E) with keyed "
        "pseudonyms, burned-in text masked; the input is never modified.",
        epilog="Exit status: 0 all files done, 1 some failed, 2 nothing done.")
    p.add_argument("input", type=Path, help="a DICOM file or a folder (searched recursively)")
    p.add_argument("output", type=Path, help="the new file or folder (must not exist)")
    p.add_argument("--key-file", type=Path, required=True,
                   help="the secret HMAC key (mode 0600; it re-links pseudonyms to patients)")
    p.add_argument("--new-key", action="store_true",
                   help="create the key file first (mode 0600; the key is never printed)")
    p.add_argument("--profile", choices=PROFILES, default="basic",
                   help="basic: Table E.1-1, attributes it does not name kept; allowlist: "
                        "unnamed free text, times and AE titles removed unless named safe")
    p.add_argument("--shift-dates", action="store_true",
                   help="Retain Longitudinal Temporal Information with Modified Dates")
    p.add_argument("--clean-descriptors", action="store_true",
                   help="keep descriptions, scrubbed of names, IDs, places and dates")
    p.add_argument("--retain-patient-characteristics", action="store_true")
    p.add_argument("--retain-device-identity", action="store_true")
    p.add_argument("--retain-institution-identity", action="store_true")
    p.add_argument("--skip-pixel-check", action="store_true",
                   help="do not decode pixels to find burned-in text (only for modalities known "
                        "to carry none)")
    p.add_argument("--report", type=Path, help="per-file report, .json or .csv (must not exist)")
    p.add_argument("--dry-run", action="store_true", help="do everything but write the outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def options(args: argparse.Namespace) -> dict:
    """The de-identification options the arguments ask for."""
    return {"profile_name": args.profile, "shift_dates": args.shift_dates,
            "clean_descriptors": args.clean_descriptors,
            "retain_patient_characteristics": args.retain_patient_characteristics,
            "retain_device_identity": args.retain_device_identity,
            "retain_institution_identity": args.retain_institution_identity,
            "burned_in": "skip" if args.skip_pixel_check else "mask"}


def report_row(report: Report | None = None, source: str = "", status: str = "ok",
               error: str = "") -> dict:
    """One row of the per-file report."""
    r = report
    return {"source": r.source if r else source, "output": r.output if r else None,
            "status": status, "error": error, "actions": r.actions if r else {},
            "text_rows_masked": len(r.boxes) if r else 0,
            "overlay_text_rows": len(r.overlay_boxes) if r else 0,
            "pixels_checked": r.pixels_checked if r else False,
            "transfer_syntax": r.transfer_syntax if r else "",
            "syntax_note": r.syntax_note if r else "", "seconds": round(r.seconds, 4) if r else 0}


def write_report(rows: list[dict], path: Path) -> None:
    """The per-file report as JSON or CSV (by suffix), created readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", newline="") as f:
        if path.suffix.lower() == ".json":
            json.dump(rows, f, indent=1)
            f.write("\n")
        else:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for row in rows:
                w.writerow({**row, "actions": json.dumps(row["actions"], sort_keys=True)})


def run(args: argparse.Namespace) -> tuple[list[dict], float]:
    """De-identify what the arguments name; the report rows and the seconds it took."""
    key = read_key_file(args.key_file)
    start = time.perf_counter()
    opts = options(args)
    if args.input.is_dir():
        progress = None if args.no_progress else config.progress
        res = deidentify_folder(args.input, args.output, key, progress=progress,
                                write=not args.dry_run, **opts)
        rows = [report_row(r) for r in res.reports]
        rows += [report_row(source=s, status="failed", error=m) for s, m in res.failures.items()]
        rows += [report_row(source=s, status="skipped", error="not DICOM") for s in res.skipped]
    else:
        try:
            rows = [report_row(deidentify_file(args.input, args.output, key,
                                               write=not args.dry_run, **opts))]
        except DeidError as exc:
            rows = [report_row(source=str(args.input), status="failed", error=str(exc))]
    return sorted(rows, key=lambda r: r["source"]), time.perf_counter() - start


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before anything is done, what would overwrite or cannot work."""
    if not args.input.exists():
        raise DeidError(f"{args.input}: no such file or folder")
    if args.output.exists():
        raise DeidError(f"{args.output}: already exists; refusing to overwrite, choose a new path")
    if args.report is not None:
        if args.report.exists():
            raise DeidError(f"{args.report}: already exists; refusing to overwrite the report")
        if args.report.suffix.lower() not in (".json", ".csv"):
            raise DeidError(f"{args.report}: the report must end in .json or .csv")
    if args.new_key and args.dry_run:
        raise DeidError("--new-key writes a key file; a dry run writes nothing")


def main(argv: list[str] | None = None) -> int:
    """Run the command; the exit status."""
    args = parser().parse_args(argv)
    # pydicom warns about every out-of-range value it reads; the report is the place for problems
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?")
    try:
        check_arguments(args)
        if args.new_key:
            new_key_file(args.key_file)
            print(f"created the key file {args.key_file} (mode 0600): keep it apart from the "
                  "data; whoever holds it can re-link every pseudonym", file=sys.stderr)
        rows, seconds = run(args)
        if args.report is not None:
            write_report(rows, args.report)
    except DeidError as exc:
        print(f"pets-lite-deid: {exc}", file=sys.stderr)
        return 2
    done = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    skipped = len(rows) - len(done) - len(failed)
    verb = "checked (dry run, nothing written)" if args.dry_run else "de-identified"
    print(f"{len(done)} files {verb}, {len(failed)} failed, {skipped} skipped (not DICOM) in "
          f"{seconds:.1f} s ({len(done) / max(seconds, 1e-9):.1f} files/s); "
          f"{sum(r['text_rows_masked'] for r in done)} text rows masked"
          + (f"; report: {args.report}" if args.report else ""))
    for r in failed:
        print(f"failed: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
