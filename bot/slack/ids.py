"""Every callback_id, block_id and action_id the bot uses (Slack generates random ones otherwise)."""

from enum import StrEnum


class CallbackId(StrEnum):
    SEND_MODAL = "sms-send-modal"


class BlockId(StrEnum):
    SEND_TO = "sms-send-to"
    SEND_MESSAGE = "sms-send-message"
    SEND_SENDER = "sms-send-sender"
    SEND_TYPE = "sms-send-type"
    SEND_HINT = "sms-send-hint"


class ActionId(StrEnum):
    SEND_TO = "sms-send-to-input"
    SEND_MESSAGE = "sms-send-message-input"
    SEND_SENDER = "sms-send-sender-input"
    SEND_TYPE = "sms-send-type-select"
