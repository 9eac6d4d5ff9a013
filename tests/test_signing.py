"""The V3 signature reproduces the official vectors of shared/docs/alibaba-sms-api.md (4.3, 4.4)."""

import hashlib
import json

from bot.sms import signing

IMAGE = "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"


def _ecs(date: str, nonce: str) -> dict[str, str]:
    return signing.sign(
        method="POST",
        host="ecs.cn-shanghai.aliyuncs.com",
        action="RunInstances",
        version="2014-05-26",
        access_key_id="YourAccessKeyId",
        access_key_secret="YourAccessKeySecret",
        query={"ImageId": IMAGE, "RegionId": "cn-shanghai"},
        date=date,
        nonce=nonce,
    )


def test_vector_a():
    headers = _ecs("2023-10-26T10:22:32Z", "3156853299f313e23d1673dc12e1703d")
    assert headers["authorization"] == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
        "x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


def test_vector_a_canonical_request_hash():
    headers = _ecs("2023-10-26T10:22:32Z", "3156853299f313e23d1673dc12e1703d")
    signed = [
        "host",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-version",
    ]
    canonical = signing.canonical_request(
        "POST",
        signing.canonical_query({"ImageId": IMAGE, "RegionId": "cn-shanghai"}),
        headers,
        signed,
        signing.EMPTY_SHA256,
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )


def test_vector_b():
    headers = _ecs("2023-10-26T09:01:01Z", "d410180a5abf7fe235dd9b74aca91fc0")
    assert headers["authorization"].endswith(
        "Signature=e521358f7776c97df52e6b2891a8bc73026794a071b50c3323388c4e0df64804"
    )


SMS_PARAMS = {
    "To": "85212345678",
    "From": "AlibabaCloud",
    "Message": "Hello, world! 你好 ~*'()+/",
    "Type": "NOTIFY",
    "TaskId": "task-001",
    "ValidityPeriod": "600",
}


def test_sms_vector_a_query():
    assert signing.canonical_query(SMS_PARAMS) == (
        "From=AlibabaCloud&Message=Hello%2C%20world%21%20%E4%BD%A0%E5%A5%BD%20~%2A%27%28%29%2B%2F"
        "&TaskId=task-001&To=85212345678&Type=NOTIFY&ValidityPeriod=600"
    )
    headers = signing.sign(
        method="POST",
        host="dysmsapi.ap-southeast-1.aliyuncs.com",
        action="SendMessageToGlobe",
        version="2018-05-01",
        access_key_id="testid",
        access_key_secret="testsecret",
        query=SMS_PARAMS,
        date="2025-01-02T03:04:05Z",
        nonce="0123456789abcdef0123456789abcdef",
    )
    assert headers["authorization"].endswith(
        "Signature=2d38b7b314e6561db37bc7159b729c4cd745fda25d493a3b4b67eb0590592c7c"
    )


def test_sms_vector_d_form_body():
    params = {
        "To": json.dumps(["6591234567", "6598765432"]),
        "Message": json.dumps(["Hi A", "Hi B"]),
        "From": "AlibabaCloud",
        "Type": "MKT",
    }
    body = signing.form_body(params)
    assert body == (
        b"From=AlibabaCloud&Message=%5B%22Hi+A%22%2C+%22Hi+B%22%5D"
        b"&To=%5B%226591234567%22%2C+%226598765432%22%5D&Type=MKT"
    )
    assert len(body) == 111
    headers = signing.sign(
        method="POST",
        host="127.0.0.1:48653",
        action="BatchSendMessageToGlobe",
        version="2018-05-01",
        access_key_id="testid",
        access_key_secret="testsecret",
        body=body,
        content_type=signing.FORM_CONTENT_TYPE,
        date="2025-01-02T03:04:05Z",
        nonce="00112233445566778899aabbccddeeff",
        # The SDK that produced the vector signs these headers too (doc 4.1, "SDK specifics").
        extra_headers={
            "accept": "application/json",
            "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
            "x-acs-credentials-provider": "static_ak",
        },
    )
    assert (
        headers["x-acs-content-sha256"] == "01eabb7bf26a9c855745bcc4d9f3f9ca801e74f6a9d9dce59b6b9a7067be2128"
    )
    assert "content-type" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert headers["authorization"].endswith(
        "Signature=bb11a1612a59bbd55c811d0ae8a7e55d718e28147484735f574c0162e380f55c"
    )


def test_security_token_is_signed():
    headers = signing.sign(
        method="POST",
        host="h",
        action="A",
        version="v",
        access_key_id="id",
        access_key_secret="s",
        security_token="sts-token",
    )
    assert headers["x-acs-security-token"] == "sts-token"
    assert "x-acs-security-token" in headers["authorization"]


def test_fresh_nonce_and_date_each_call():
    a = signing.sign(
        method="POST", host="h", action="A", version="v", access_key_id="id", access_key_secret="s"
    )
    b = signing.sign(
        method="POST", host="h", action="A", version="v", access_key_id="id", access_key_secret="s"
    )
    assert a["x-acs-signature-nonce"] != b["x-acs-signature-nonce"]
    assert len(a["x-acs-signature-nonce"]) == 32


def test_percent_encoding_rules():
    assert signing.percent_encode(" *~+/") == "%20%2A~%2B%2F"
