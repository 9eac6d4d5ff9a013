"""The shared Alibaba Cloud SMS client (international API 2018-05-01). Knows nothing of Slack.

from bot.sms import SmsClient, SmsSettings
async with SmsClient(SmsSettings()) as sms:
    resp = await sms.send(to="+852 5123 4567", message="Your parcel ships today")
"""

from .client import SmsClient
from .config import SmsSettings
from .encoding import MessageError, MessageInfo, analyse, validate_message
from .errors import (
    ConfigurationError,
    ConnectError,
    CredentialError,
    InvalidRequestError,
    NotSentError,
    OutcomeUnknownError,
    ProviderRejectedError,
    ServiceUnavailableError,
    SmsError,
    ThrottledError,
    describe_code,
)
from .limits import AccountLimiter, RateLimiter
from .mns import QueueError, QueueMessage, ReceiptQueue
from .models import (
    BatchSendRequest,
    BatchSendResponse,
    MessageType,
    QueryRequest,
    QueryResponse,
    SendRequest,
    SendResponse,
)
from .pacing import Hooks, Outcome, Status, batch_send_all, fan_out
from .phone import InvalidNumber, PhoneNumber, mask, parse_number
from .receipts import Delivery, Receipt, ReceiptFormatError, from_query, number_matches, parse_push
from .receipts import describe as describe_delivery

__all__ = [
    "AccountLimiter",
    "BatchSendRequest",
    "BatchSendResponse",
    "ConfigurationError",
    "ConnectError",
    "CredentialError",
    "Delivery",
    "Hooks",
    "InvalidNumber",
    "InvalidRequestError",
    "MessageError",
    "MessageInfo",
    "MessageType",
    "NotSentError",
    "Outcome",
    "OutcomeUnknownError",
    "PhoneNumber",
    "ProviderRejectedError",
    "QueryRequest",
    "QueryResponse",
    "QueueError",
    "QueueMessage",
    "RateLimiter",
    "Receipt",
    "ReceiptFormatError",
    "ReceiptQueue",
    "SendRequest",
    "SendResponse",
    "ServiceUnavailableError",
    "SmsClient",
    "SmsError",
    "SmsSettings",
    "Status",
    "ThrottledError",
    "analyse",
    "batch_send_all",
    "describe_code",
    "describe_delivery",
    "fan_out",
    "from_query",
    "mask",
    "number_matches",
    "parse_number",
    "parse_push",
    "validate_message",
]
