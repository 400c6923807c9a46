import sys

from service_runtime.config import ConfigError

try:
    from entitlement_service.app import main

    main()
except ConfigError as exc:
    sys.exit(f"entitlement_service: configuration error: {exc}")
except OSError as exc:  # a listen address already taken, for one
    sys.exit(f"entitlement_service: cannot start: {exc}")
