"""Every callback_id, block_id and action_id the bot uses (Slack generates random ones otherwise)."""

from enum import StrEnum


class CallbackId(StrEnum):
    SEND_MODAL = "sms-send-modal"
    BULK_FORM = "sms-bulk-form"
    BULK_CONFIRM = "sms-bulk-confirm"
    BULK_INFO = "sms-bulk-info"
    OUTAGE_FORM = "sms-outage-form"


class BlockId(StrEnum):
    SEND_TO = "sms-send-to"
    SEND_MESSAGE = "sms-send-message"
    SEND_SENDER = "sms-send-sender"
    SEND_TYPE = "sms-send-type"
    SEND_HINT = "sms-send-hint"
    BULK_RECIPIENTS = "sms-bulk-recipients"
    BULK_FILE = "sms-bulk-file"
    BULK_MESSAGE = "sms-bulk-message"
    BULK_TYPE = "sms-bulk-type"
    BULK_SENDER = "sms-bulk-sender"
    BULK_VALIDITY = "sms-bulk-validity"
    BULK_TYPED_COUNT = "sms-bulk-typed-count"
    BULK_SUMMARY_ACTIONS = "sms-bulk-summary-actions"
    OUTAGE_GROUPS = "sms-outage-groups"
    OUTAGE_EXTRA = "sms-outage-extra"
    OUTAGE_SERVICE = "sms-outage-service"
    OUTAGE_STATUS = "sms-outage-status"
    OUTAGE_DETAILS = "sms-outage-details"
    OUTAGE_MESSAGE = "sms-outage-message"
    OUTAGE_TEST = "sms-outage-test"


class ActionId(StrEnum):
    SEND_TO = "sms-send-to-input"
    SEND_MESSAGE = "sms-send-message-input"
    SEND_SENDER = "sms-send-sender-input"
    SEND_TYPE = "sms-send-type-select"
    BULK_RECIPIENTS = "sms-bulk-recipients-input"
    BULK_FILE = "sms-bulk-file-input"
    BULK_MESSAGE = "sms-bulk-message-input"
    BULK_TYPE = "sms-bulk-type-radio"
    BULK_SENDER = "sms-bulk-sender-input"
    BULK_VALIDITY = "sms-bulk-validity-input"
    BULK_TYPED_COUNT = "sms-bulk-typed-count-input"
    BULK_SEND_AGAIN = "sms-bulk-retry-failed"  # the value buttons already posted carry: unchanged
    OUTAGE_GROUPS = "sms-outage-groups-select"
    OUTAGE_EXTRA = "sms-outage-extra-input"
    OUTAGE_SERVICE = "sms-outage-service-input"
    OUTAGE_STATUS = "sms-outage-status-select"
    OUTAGE_DETAILS = "sms-outage-details-input"
    OUTAGE_MESSAGE = "sms-outage-message-input"
    OUTAGE_TEST = "sms-outage-test-checkbox"
    OUTAGE_FOLLOW_UP = "sms-outage-follow-up"
