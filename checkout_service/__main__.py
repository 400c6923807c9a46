"""`python -m checkout_service` serves; `python -m checkout_service catalog apply FILE` applies a
catalog file to the provider and the entitlement service."""

import sys

from service_runtime.config import ConfigError

USAGE = "usage: python -m checkout_service [catalog apply FILE]"

try:
    args = sys.argv[1:]
    if not args:
        from checkout_service.app import main

        main()
    elif args[:2] == ["catalog", "apply"] and len(args) == 3:
        from checkout_service.cli import catalog_apply

        sys.exit(catalog_apply(args[2]))
    else:
        sys.exit(USAGE)
except ConfigError as exc:
    sys.exit(f"checkout_service: configuration error: {exc}")
except OSError as exc:  # a listen address already taken, for one
    sys.exit(f"checkout_service: cannot start: {exc}")
