"""`python -m checkout_service` serves; `python -m checkout_service catalog apply [--dry-run] FILE`
applies a catalog file to the provider and the entitlement service (with `--dry-run`, says what it
would change and changes nothing)."""

import sys

from service_runtime.config import ConfigError

USAGE = "usage: python -m checkout_service [catalog apply [--dry-run] FILE]"

try:
    args = sys.argv[1:]
    if not args:
        from checkout_service.app import main

        main()
    elif args[:2] == ["catalog", "apply"] and len(args) in (3, 4) and args[2:-1] in ([], ["--dry-run"]):
        from checkout_service.cli import catalog_apply

        sys.exit(catalog_apply(args[-1], dry_run=len(args) == 4))
    else:
        sys.exit(USAGE)
except ConfigError as exc:
    sys.exit(f"checkout_service: configuration error: {exc}")
except OSError as exc:  # a listen address already taken, for one
    sys.exit(f"checkout_service: cannot start: {exc}")
