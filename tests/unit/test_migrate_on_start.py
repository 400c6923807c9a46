import pytest

from entitlement_service.settings import Settings
from service_runtime.config import ConfigError
from tests.support.tokens import SERVICE_TOKENS


@pytest.mark.parametrize(("given", "migrates"), [(None, True), ("true", True), ("false", False), (" false ", False)])
def test_the_service_migrates_at_start_unless_told_not_to(given: str | None, migrates: bool) -> None:
    env = {"SERVICE_TOKENS": SERVICE_TOKENS, **({"MIGRATE_ON_START": given} if given is not None else {})}
    assert Settings.from_env(env).migrate_on_start is migrates


@pytest.mark.parametrize("given", ["yes", "0", "False", "off"])
def test_any_other_value_is_refused_naming_the_variable(given: str) -> None:
    with pytest.raises(ConfigError, match=r"^MIGRATE_ON_START must be one of true, false"):
        Settings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS, "MIGRATE_ON_START": given})
