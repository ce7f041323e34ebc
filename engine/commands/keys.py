"""`argus keys`: a CURVE key pair written to two files, the public key and the secret one."""

from __future__ import annotations

import argparse
import os

from engine.commands.arg_types import UsageError, none_empty
from protocols.curve import create_key_files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, help="directory to write the key files into")
    p.add_argument("--name", default="engine", help="file name stem, e.g. engine, worker-1, client")
    p.add_argument("--force", action="store_true", help="replace an existing NAME.key / NAME.key_secret pair")


def run(args: argparse.Namespace) -> int:
    none_empty(args, "--dir")  # a variable left unset: said as ': No such file or directory'
    if not args.name or os.sep in args.name or "\0" in args.name:
        # "../evil" wrote the pair beside --dir, without a word
        raise UsageError(f"--name {args.name!r}: give a plain file name (the key files go in --dir)")
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        # its FileExistsError read as a key pair's, and --force did not help
        raise UsageError(f"--dir {args.dir}: not a directory")
    try:
        public, secret = create_key_files(args.dir, args.name, replace=args.force)
    except FileExistsError as error:
        # whoever holds the old public key would be refused by the new pair
        raise UsageError(f"{error.filename} exists: pass --force to replace the key pair") from None
    except OSError as error:  # a --dir that cannot be made or written in, a key file's name taken: a traceback, before
        raise UsageError(f"{error.filename2 or error.filename or args.dir}: {error.strerror or error}") from None
    except ValueError as error:  # a libzmq without CURVE
        raise UsageError(str(error)) from None
    print(f"public key:  {public}\nsecret key:  {secret} (keep it private)")
    return 0
