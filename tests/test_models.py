import json

import pytest
from pydantic import ValidationError

from bot.sms.models import (
    BatchSendRequest,
    BatchSendResponse,
    QueryResponse,
    QueryStatus,
    SendRequest,
    SendResponse,
    first_error,
)


def error_of(model, **fields) -> str:
    with pytest.raises(ValidationError) as info:
        model(**fields)
    return first_error(info.value)


GOOD = {"to": "+852 5123 4567", "message": "hello"}


def test_send_params_are_the_api_form():
    req = SendRequest(**GOOD, sender_id="Alicloud321", type="OTP", task_id="t-1", validity_period=600)
    assert req.params() == {
        "To": "85251234567",
        "Message": "hello",
        "From": "Alicloud321",
        "Type": "OTP",
        "TaskId": "t-1",
        "ValidityPeriod": "600",
    }
    assert SendRequest(**GOOD).params() == {"To": "85251234567", "Message": "hello"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"to": "+86 138 0013 8000"}, "Chinese-mainland numbers (+86) cannot be reached"),
        ({"to": "+852 123"}, "Too short for a number in Hong Kong"),
        ({"to": 85251234567}, "must be a phone number string"),
        (
            {"sender_id": "Alicloud3210"},
            "a sender ID with letters may be at most 11 characters; this one has 12",
        ),
        ({"sender_id": "1234567890123456"}, "a numeric sender ID may be at most 15 digits; this one has 16"),
        ({"sender_id": "Ali-cloud"}, "may hold only letters and digits; “-” is not allowed"),
        ({"sender_id": "Ali cloud"}, "may hold only letters and digits; “ ” is not allowed"),
        ({"sender_id": ""}, "the sender ID is empty"),
        ({"task_id": ""}, "the task ID must be 1 to 255 characters; this one has 0"),
        ({"task_id": "x" * 256}, "the task ID must be 1 to 255 characters; this one has 256"),
        ({"type": "GENERAL"}, "type: Input should be 'NOTIFY', 'MKT' or 'OTP'"),
        ({"validity_period": 0}, "the validity period must be a positive number of seconds"),
        ({"validity_period": -5}, "the validity period must be a whole number of seconds"),
        ({"validity_period": 1.5}, "the validity period must be a whole number of seconds"),
        ({"message": ""}, "The message is empty"),
        ({"message": "x" * 1501}, "The message is 1,501 characters long; the limit is 1,500"),
    ],
)
def test_send_constraints(fields, expected):
    assert expected in error_of(SendRequest, **{**GOOD, **fields})


def test_sender_id_limits_accept_the_maximum():
    assert SendRequest(**GOOD, sender_id="A" * 11).sender_id == "A" * 11
    assert SendRequest(**GOOD, sender_id="1" * 15).sender_id == "1" * 15
    assert SendRequest(**GOOD, task_id="x" * 255).task_id == "x" * 255


def test_configurable_message_maximum():
    assert "the limit is 10" in error_of(SendRequest, **{**GOOD, "message": "x" * 11}, max_chars=10)


def test_batch_params_are_json_array_strings_in_order():
    req = BatchSendRequest(to=["+852 5123 4567", "+65 8123 4567"], messages=["Hi A", "Hi B"], type="MKT")
    params = req.params()
    assert json.loads(params["To"]) == ["85251234567", "6581234567"]
    assert json.loads(params["Message"]) == ["Hi A", "Hi B"]
    assert params["Type"] == "MKT"


BATCH = {"to": ["+852 5123 4567"], "messages": ["hi"]}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"to": [], "messages": []}, "the batch has no recipients"),
        (
            {"to": ["85251234567"] * 1001, "messages": ["x"] * 1001},
            "at most 1,000 numbers; this one has 1,001",
        ),
        ({"messages": ["a", "b"]}, "the batch has 1 numbers but 2 messages; they must be the same length"),
        ({"type": "OTP"}, "the batch API takes only NOTIFY or MKT messages"),
        ({"messages": [""]}, "message 1: The message is empty"),
        ({"to": ["+86 138 0013 8000"]}, "Chinese-mainland numbers"),
        ({"sender_id": "Ali_cloud"}, "“_” is not allowed"),
        ({"validity_period": 0}, "positive number of seconds"),
    ],
)
def test_batch_constraints(fields, expected):
    assert expected in error_of(BatchSendRequest, **{**BATCH, **fields})


def test_batch_accepts_exactly_1000():
    req = BatchSendRequest(to=["85251234567"] * 1000, messages=["x"] * 1000)
    assert len(req.to) == 1000


def test_send_response_quirks():
    resp = SendResponse.model_validate(
        {
            "ResponseCode": "OK",
            "NumberDetail": {"Carrier": "CMI", "Region": "HongKong", "Country": "Hongkong, China"},
            "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990",
            "Segments": "2",
            "ResponseDescription": "The SMS Send Request was accepted",
            "From": "Alicloud321",
            "To": "1380000****",
            "MessageId": "1008030300****",
        }
    )
    assert resp.ok and resp.segments == 2 and isinstance(resp.segments, int)
    assert resp.number_detail.carrier == "CMI" and resp.number_detail.country == "Hongkong, China"
    assert resp.sender_id == "Alicloud321"


def test_batch_response_quirks():
    resp = BatchSendResponse.model_validate(
        {
            "ResponseCode": "OK",
            "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8D28D3",
            "FailedList": '["931520581****","931530581****"]',
            "ResponseDescription": "The SMS Send Request was accepted",
            "From": "Alicloud321",
            "MessageIdList": '["123****","124****"]',
            "SuccessCount": "2",
        }
    )
    assert resp.failed_list == ["931520581****", "931530581****"]
    assert resp.message_id_list == ["123****", "124****"]
    assert resp.success_count == 2


def test_batch_response_empty_lists():
    resp = BatchSendResponse.model_validate({"ResponseCode": "OK", "FailedList": "", "SuccessCount": "0"})
    assert resp.failed_list == [] and resp.message_id_list == []


def test_query_response_quirks():
    resp = QueryResponse.model_validate(
        {"ResponseCode": "OK", "Status": "2", "SendDate": "Mon, 24 Dec 2018 16:58:22 +0800", "ErrorCode": "X"}
    )
    assert resp.status is QueryStatus.FAILED
    assert resp.send_date.year == 2018 and resp.send_date.utcoffset().total_seconds() == 8 * 3600
