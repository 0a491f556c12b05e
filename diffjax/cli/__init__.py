"""The ``diffjax`` command: ``demo``, ``train``, ``sample``, ``nll``, ``bench``.

Edge code only: flags become keyword arguments of library functions; the run config (a flat
JSON dict) is stored with every checkpoint so ``sample``/``nll`` rebuild the same model.

* :mod:`._parser`: the flags; :mod:`._demo`, :mod:`._train`, :mod:`._sample`: the subcommands;
  :mod:`._build`: run config -> library objects; :mod:`._errors`: one-line errors, exit status 2.
"""

from __future__ import annotations

import sys

from diffjax.cli._errors import CliError, error_line

__all__ = ["main", "CliError"]


def main(argv=None) -> int:
    from diffjax.cli._parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for name in ("steps", "n", "batch_size", "ckpt_every", "log_every"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's per-order RDP warnings
    try:
        return args.func(args)
    except Exception as e:  # expected failures -> one line; anything else is a bug and keeps its traceback
        msg = error_line(e)
        if msg is None:
            raise
        print(f"diffjax {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
