"""`python -m llem.gpu status` — what llem has changed on this host's GPUs (its restore records);
`python -m llem.gpu restore [--all]` — put back the settings of every record whose llem process is gone
(`--all`: also of live ones, e.g. a hung study). Exit 0 when nothing is left changed, 1 when a restore
failed, 2 on a bad argument."""

from __future__ import annotations

import argparse
import sys

from llem.gpu import records
from llem.gpu.apply import describe, restore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llem.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("status", "restore"))
    parser.add_argument("--all", action="store_true", help="restore: records of running llem processes too")
    args = parser.parse_args(argv)
    found = records.on_this_host()
    if args.command == "status":
        if not found:
            print(f"llem: no GPU settings changed by llem on this host (records: {records.records_dir()})")
            return 0
        for path, rec in found:
            state = "running" if records.alive(rec) else "GONE (restore with `python -m llem.gpu restore`)"
            print(f"llem pid {rec.get('pid')} [{state}] since {rec.get('created_at')} ({rec.get('owner')}): "
                  f"{describe(rec).replace('back to', 'was')} — record {path}")
        return 0
    rc = 0
    for path, rec in found:
        if records.alive(rec) and not args.all:
            print(f"llem: pid {rec.get('pid')} still runs and holds its GPUs: left alone (use --all to restore anyway)")
            continue
        failed = restore(path, rec)
        if failed:
            rc = 1
            print(f"llem: could not restore {path}: {'; '.join(failed)}", file=sys.stderr)
        else:
            print(f"llem: restored GPU settings of llem pid {rec.get('pid')}: {describe(rec)}")
    if not found:
        print("llem: nothing to restore: no GPU settings changed by llem on this host")
    return rc


if __name__ == "__main__":
    sys.exit(main())
