"""Who callscribe calls Twilio's REST API as, from the settings (no `twilio` import: the runtime reads this
at every start-up, and the REST client is loaded only where it is used).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings


@dataclass(frozen=True, slots=True)
class RestCredentials:
    """Who the REST API is called as: an API key (`SK...` and its secret) or the account's SID and auth token."""

    account_sid: str
    username: str
    password: str = ""

    @property
    def kind(self) -> str:
        return "API key" if self.username.startswith("SK") else "account SID and auth token"


def rest_credentials(settings: Settings) -> RestCredentials | None:
    """The API key pair when set, else the account SID and auth token; None without an account SID."""
    account = settings.twilio_account_sid
    if account is None:
        return None
    if settings.twilio_api_key_sid and settings.twilio_api_key_secret:
        return RestCredentials(account, settings.twilio_api_key_sid, settings.twilio_api_key_secret.get_secret_value())
    if settings.twilio_auth_token is None:
        return None
    return RestCredentials(account, account, settings.twilio_auth_token.get_secret_value())
