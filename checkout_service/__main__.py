import sys

from service_runtime.config import ConfigError

try:
    from checkout_service.app import main

    main()
except ConfigError as exc:
    sys.exit(f"checkout_service: configuration error: {exc}")
