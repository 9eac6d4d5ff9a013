"""What happened to a request, as the caller needs to know it.

Two families, never mixed:
- `NotSentError`: the provider did not accept the message (nothing billed). Some are `retryable`.
- `OutcomeUnknownError`: the request may have been accepted (and billed). Never resend it
  automatically; report it and let a person check (delivery receipts, the console).
"""

from __future__ import annotations

# Provider and gateway codes, in plain words. Sources: shared/docs/alibaba-sms-api.md sections 3.1 and 3.2.
CODE_DESCRIPTIONS: dict[str, str] = {
    # Service codes (ResponseCode)
    "INVALID_SENDERID": "The sender ID is not approved for this account. It must match an approved sender ID "
    "exactly (letters, digits and case).",
    "SENDERID_ERROR": "The sender ID is malformed or blocked by the destination country.",
    "FORBIDDEN_ACTION": "The account's permission to call this API was downgraded or removed.",
    "OUT_OF_SERVICE": "The SMS service is suspended for this account (often an unpaid balance).",
    "ACCOUNT_NOT_EXISTS": "The SMS account is not activated or not verified.",
    "SMS_CONTENT_CODE_ILLEGAL": "The template was rejected by the provider.",
    "SMS_SIGN_NAME_ILLEGAL": "The signature was rejected by the provider.",
    "MOBILE_NUMBER_ILLEGAL": "The provider says the phone number is not in a valid format.",
    "MOBILE_COUNT_OVER_LIMIT": "More than 1,000 numbers were sent in one batch.",
    "CONTENT_MISSING_PARAMETERS": "A template variable was empty.",
    "INVALID_PARAMETERS": "The provider rejected a parameter of the request as invalid.",
    "INVALID_JSON_PARAM": "The provider could not read the list of numbers or messages.",
    "BLACK_KEY_CONTROL_LIMIT": "The message contains blocked words or the number is on a block list.",
    "PARAM_LENGTH_LIMIT": "A parameter (often the message) is too long for the provider.",
    "AMOUNT_NOT_ENOUGH": "The account balance is too low. Top it up, then send again.",
    "DATA_NOT_EXIST": "The provider has no record of that message (yet).",
    "BILLING_DEDUCTION_ERROR": "Billing failed (overdue payment on the account).",
    "RAM_PERMISSION_DENY": "The access key's RAM user is not allowed to call this API.",
    "PRODUCT_UN_SUBSCRIPT": "SMS is not activated on this Alibaba Cloud account.",
    "NOT_SUPPORTED_COUNTRY": "The provider does not deliver to that country.",
    "COUNTRY_RESTRICTED": "Chinese-mainland numbers are not supported by the international API.",
    "BUSINESS_LIMIT_CONTROL_MINUTE": "Too many messages to this number this minute (provider limit).",
    "BUSINESS_LIMIT_CONTROL_HOUR": "Too many messages to this number this hour (provider limit).",
    "BUSINESS_LIMIT_CONTROL_DAY": "Too many messages to this number today (provider limit).",
    "BUSINESS_LIMIT_CONTROL_PHONE": "Too many messages to this number (provider limit).",
    "SYSTEM_ERROR": "The provider reported an internal error; the message may or may not have been accepted.",
    "UNKNOWN": "The provider reported an unknown error; the message may or may not have been accepted.",
    "GATEWAY_ERROR": "The provider's gateway failed; the message may or may not have been accepted.",
    # Gateway codes (Code)
    "SignatureDoesNotMatch": "The request signature was rejected: check ALIBABA_CLOUD_ACCESS_KEY_SECRET.",
    "IncompleteSignature": "The request signature was malformed.",
    "InvalidAccessKeyId.NotFound": "The access key ID does not exist: check ALIBABA_CLOUD_ACCESS_KEY_ID.",
    "InvalidAccessKeyId.Inactive": "The access key is disabled.",
    "InvalidTimeStamp.Format": "The request timestamp was malformed.",
    "InvalidTimeStamp.Expired": "This machine's clock is more than 15 minutes off; fix the clock (NTP).",
    "SignatureNonceUsed": "The request nonce was reused.",
    "MissingParameter": "A required parameter is missing.",
    "InvalidParameter": "A parameter is invalid.",
    "InvalidApi.NotFound": "Wrong action, version or endpoint: check SMS_ENDPOINT.",
    "UnsupportedHTTPMethod": "The HTTP method is not supported.",
    "InvalidSignatureMethod": "The signature method is not supported.",
    "Forbidden.RAM": "The access key's RAM user lacks permission for this action.",
    "Forbidden.RiskControl": "The provider's risk control blocked the request.",
    "ActionUnauthorized": "The access key is not authorised for this action.",
    "InvalidSecurityToken.Expired": "The STS security token has expired.",
    "InvalidSecurityToken.Malformed": "The STS security token is malformed.",
    "Throttling.User": "Too many requests per second for this account (provider flow control).",
    "Throttling.Api": "Too many requests per second for this API (provider flow control).",
    "Throttling": "The provider is throttling requests.",
    "InternalError": "The provider had an internal error; the message may or may not have been accepted.",
    "ServiceUnavailable": "The provider is temporarily unavailable.",
}

CREDENTIAL_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "Forbidden.RAM",
        "ActionUnauthorized",
        "RAM_PERMISSION_DENY",
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.Malformed",
    }
)
# Service codes after which the provider may have accepted the message: treat as unknown (doc 3.3).
AMBIGUOUS_CODES = frozenset({"SYSTEM_ERROR", "UNKNOWN", "GATEWAY_ERROR", "InternalError"})


def describe_code(code: str | None, fallback: str | None = None) -> str:
    if code and code in CODE_DESCRIPTIONS:
        return CODE_DESCRIPTIONS[code]
    if code and code.startswith("Throttling"):
        return CODE_DESCRIPTIONS["Throttling"]
    if code and code.startswith(("Missing", "Invalid")):
        return f"The provider rejected the request ({code})."
    return fallback or f"The provider refused the request ({code or 'no code'})."


class SmsError(Exception):
    """Base of every error the client raises."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" if self.code else self.message


class NotSentError(SmsError):
    """The provider did not accept the request; nothing was sent or billed."""


class InvalidRequestError(NotSentError):
    """Refused by our own checks before any network call."""


class ConfigurationError(NotSentError):
    """Credentials or settings are missing or wrong; fix them, retrying will not help."""


class ProviderRejectedError(NotSentError):
    """The provider answered and refused (a non-OK ResponseCode or a gateway 4xx)."""


class CredentialError(ProviderRejectedError):
    """Signature, access key, STS token or RAM permission problems."""


class ThrottledError(ProviderRejectedError):
    """`Throttling*`: rejected at the gateway, safe to retry after a pause."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailableError(ProviderRejectedError):
    """HTTP 503: the provider did not take the request; safe to retry."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ConnectError(NotSentError):
    """No connection was made (DNS, refused, connect timeout, TLS handshake): nothing went out."""

    retryable = True


class OutcomeUnknownError(SmsError):
    """The request went out and we do not know whether the provider accepted it.

    It may have been sent and billed. It is never retried automatically.
    """
