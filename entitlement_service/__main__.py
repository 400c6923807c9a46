"""`python -m entitlement_service` serves; `python -m entitlement_service migrate` applies the
migrations as DATABASE_URL's role, grants DATABASE_RUNTIME_ROLE what the service needs, and exits;
`python -m entitlement_service prune-events` runs the event retention once and exits."""

import sys

from service_runtime.config import ConfigError

USAGE = "usage: python -m entitlement_service [migrate | prune-events]"

try:
    args = sys.argv[1:]
    if not args:
        from entitlement_service.app import main

        main()
    elif args == ["migrate"]:
        from entitlement_service.app import migrate_main

        migrate_main()
    elif args == ["prune-events"]:
        from entitlement_service.app import prune_events_main

        prune_events_main()
    else:
        sys.exit(USAGE)
except ConfigError as exc:
    sys.exit(f"entitlement_service: configuration error: {exc}")
except OSError as exc:  # a listen address already taken, for one
    sys.exit(f"entitlement_service: cannot start: {exc}")
