"""`python -m bot.sms`: send, batch-send and query from scripts and on-call shells.

Exit codes: 0 all accepted · 1 some failed · 3 some outcome unknown · 2 bad usage or input (nothing sent).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from pydantic import ValidationError

from . import loop
from .client import SmsClient
from .config import SmsSettings
from .encoding import MessageError, validate_message
from .errors import InvalidRequestError, SmsError
from .loop import LoopChoice
from .mns import QueueError, ReceiptQueue
from .models import MessageType, check_sender_id, check_task_id
from .pacing import Hooks, Outcome, Status, batch_send_all, fan_out
from .phone import InvalidNumber, mask, parse_number
from .receipts import Receipt, ReceiptFormatError, describe, from_query, parse_push
from .recipients import RecipientList, TemplateError, check_template, parse_recipients, render

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one clear line, as argparse does, but no usage dump
        raise UsageError(message)


AT_HELP = (
    "send at this time, e.g. 2026-11-25T09:00+08:00 (no offset: this machine's time zone); the command "
    "waits until then (Ctrl-C before it: nothing is sent). Scheduled sends that survive restarts: the "
    "bot's forms"
)
AT_GRACE = 60.0  # seconds in the past that still mean "now" (the time it took to type the command)


def parse_at(text: str, now: float) -> float:
    """`--at` as epoch seconds; UsageError when it is not a time, has passed, or is over a year away."""
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise UsageError(f"--at “{text}” is not a time like 2026-11-25T09:00+08:00") from None
    at = when.timestamp() if when.tzinfo else when.astimezone().timestamp()
    if at < now - AT_GRACE:
        raise UsageError(f"--at {text} has passed")
    if at > now + 366 * 86400:
        raise UsageError(f"--at {text} is more than a year away")
    return at


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bot.sms", description="Send SMS through Alibaba Cloud (international).")
    parser.add_argument("--json", action="store_true", help="one JSON object per recipient on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request (numbers masked)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="send to the built-in simulator instead (also SMS_DRY_RUN=true): numbers ending in 0000 are "
        "refused, in 0001 get an unknown outcome; nothing leaves this machine",
    )
    sub = parser.add_subparsers(dest="command", metavar="{send,batch,query,receipts}")

    send = sub.add_parser("send", help="single sends (SendMessageToGlobe), fanned out at the configured rate")
    send.add_argument("--message", "-m", required=True)
    dest = send.add_mutually_exclusive_group(required=True)
    dest.add_argument(
        "--to",
        nargs="+",
        metavar="NUMBER",
        help="one or more numbers; spaces inside a number need no quotes when it starts with + (+852 5123 4567)",
    )
    dest.add_argument("--file", metavar="PATH")
    send.add_argument("--from", dest="sender_id", metavar="ID")
    send.add_argument("--type", choices=[t.value for t in MessageType])
    send.add_argument("--task-id")
    send.add_argument("--at", metavar="WHEN", help=AT_HELP)
    send.add_argument("--json", action="store_true", dest="json_sub", help=argparse.SUPPRESS)

    batch = sub.add_parser("batch", help="BatchSendMessageToGlobe: ≤ 1,000 numbers per call, 1 call/s")
    batch.add_argument("--message", "-m", required=True)
    batch.add_argument("--file", required=True, metavar="PATH")
    batch.add_argument("--from", dest="sender_id", metavar="ID")
    batch.add_argument("--type", choices=["NOTIFY", "MKT"], default="NOTIFY")
    batch.add_argument("--task-id")
    batch.add_argument("--validity", type=int, metavar="SECONDS")
    batch.add_argument("--at", metavar="WHEN", help=AT_HELP)
    batch.add_argument("--json", action="store_true", dest="json_sub", help=argparse.SUPPRESS)

    query = sub.add_parser("query", help="QueryMessage: delivery status of one message")
    query.add_argument("message_id")
    query.add_argument("--json", action="store_true", dest="json_sub", help=argparse.SUPPRESS)

    receipts = sub.add_parser(
        "receipts",
        help="print delivery receipts as they come, one JSON object each: from the receipt queue "
        "(RECEIPTS_QUEUE), or pushed to this machine with --listen",
    )
    receipts.add_argument(
        "--listen", type=int, metavar="PORT", help="take the provider's HTTP pushes on PORT"
    )
    receipts.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")  # noqa: S104
    receipts.add_argument("--count", type=int, metavar="N", help="stop after N receipts")
    receipts.add_argument("--json", action="store_true", dest="json_sub", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # What is loaded now (the libraries, the phone metadata) lives as long as the command: out of the
    # collector's reach, a full collection in the middle of a send no longer walks it (as `python -m bot`
    # does once started).
    gc.freeze()
    try:
        code = loop.run(
            run(list(sys.argv[1:] if argv is None else argv), sys.stdout, sys.stderr), _loop_choice()
        )
    except KeyboardInterrupt:
        print("interrupted: requests already sent may have been accepted", file=sys.stderr)
        code = EXIT_UNKNOWN
    return code


def _loop_choice() -> LoopChoice:
    try:
        return SmsSettings().event_loop
    except ValidationError:
        return "auto"  # `run` reports the bad settings


async def run(argv: list[str], out: TextIO, err: TextIO, settings: SmsSettings | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.command is None:
        print(build_parser().format_help().rstrip(), file=err)
        print(
            "\nerror: choose a command: send, batch, query or receipts (e.g. python -m bot.sms send --help)",
            file=err,
        )
        return EXIT_USAGE
    as_json = args.json or getattr(args, "json_sub", False)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=err)
    try:
        settings = settings or SmsSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = first["loc"][0] if first["loc"] else "setting"
        print(f"error: setting {name}: {first['msg'].removeprefix('Value error, ')}", file=err)
        return EXIT_USAGE
    if args.command == "receipts":
        return await _receipts(args, settings, out, err)
    simulator = None
    if args.dry_run or settings.dry_run:
        from .simulator import DRY_RUN_FAIL_SUFFIX, DRY_RUN_UNKNOWN_SUFFIX, dry_run_provider  # only then

        simulator = dry_run_provider()
        settings = simulator.settings_for(settings, await simulator.start("127.0.0.1", 0))
        print(
            f"dry run: nothing leaves this machine; numbers ending in {DRY_RUN_FAIL_SUFFIX} are refused, "
            f"in {DRY_RUN_UNKNOWN_SUFFIX} get an unknown outcome",
            file=err,
        )
    try:
        return await _run(args, settings, as_json, out, err)
    finally:
        if simulator is not None:
            await simulator.stop()


async def _run(
    args: argparse.Namespace, settings: SmsSettings, as_json: bool, out: TextIO, err: TextIO
) -> int:
    missing = settings.missing_credentials()
    if missing:
        print(f"error: set {' and '.join(missing)} (environment or .env), or try --dry-run", file=err)
        return EXIT_USAGE
    try:
        async with SmsClient(settings) as client:
            if args.command == "query":
                return await _query(client, args.message_id, as_json, out, err)
            plan = _plan(args, settings, err)
            at = parse_at(args.at, time.time()) if getattr(args, "at", None) else None
            if at is not None and at > time.time():
                shown = datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")
                print(
                    f"waiting until {shown} to send to {len(plan[0]):,} (Ctrl-C: nothing is sent)", file=err
                )
                await asyncio.sleep(at - time.time())
            progress = _Progress(err, len(plan[0])) if err.isatty() and not as_json else None
            hooks = Hooks(on_progress=progress.update if progress else None)
            if args.command == "send":
                requests = [
                    client.send_request(
                        to=number,
                        message=message,
                        sender_id=args.sender_id or settings.sender_id,
                        type=args.type,
                        task_id=args.task_id,
                    )
                    for number, message in zip(*plan, strict=True)
                ]
                outcomes = await fan_out(client, requests, hooks=hooks)
            else:
                outcomes = await batch_send_all(
                    client,
                    *plan,
                    hooks=hooks,
                    sender_id=args.sender_id or settings.sender_id,
                    type=args.type,
                    task_id=args.task_id,
                    validity_period=args.validity,
                )
            if progress:
                progress.finish()
    except (UsageError, InvalidRequestError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    _report(outcomes, as_json, out)
    if any(o.status == Status.UNKNOWN for o in outcomes):
        return EXIT_UNKNOWN
    if any(o.status == Status.FAILED for o in outcomes):
        return EXIT_FAILED
    return EXIT_OK


def _plan(args: argparse.Namespace, settings: SmsSettings, err: TextIO) -> tuple[list[str], list[str]]:
    """Numbers (API form) and one message each; raises UsageError before anything is sent."""
    if args.sender_id is not None:
        try:
            check_sender_id(args.sender_id)
        except ValueError as exc:
            raise UsageError(f"--from: {exc}") from None
    if args.task_id is not None:
        try:
            check_task_id(args.task_id)
        except ValueError as exc:
            raise UsageError(f"--task-id: {exc}") from None
    if getattr(args, "validity", None) is not None and args.validity <= 0:
        raise UsageError("--validity: the validity period must be a positive number of seconds")
    if getattr(args, "to", None):
        numbers = []
        for text in _numbers_in(args.to, settings.default_region):
            try:
                numbers.append(parse_number(text, settings.default_region).api)
            except InvalidNumber as exc:
                raise UsageError(exc.describe()) from None
        if len(set(numbers)) != len(numbers):
            raise UsageError("the same number is given twice in --to")
        messages = [args.message] * len(numbers)
    else:
        listing = _read_list(args.file, settings)
        if listing.duplicates:
            print(
                f"note: {listing.duplicates} repeated number(s) in {args.file} left out: each number is sent once",
                file=err,
            )
        try:
            check_template(args.message, listing.columns)
            messages = [render(args.message, r.fields) for r in listing.recipients]
        except TemplateError as exc:
            raise UsageError(exc.reason) from None
        numbers = [r.number.api for r in listing.recipients]
    for i, message in enumerate(messages):
        try:
            validate_message(message, settings.max_message_chars)
        except MessageError as exc:
            where = f" (recipient {i + 1})" if len(set(messages)) > 1 else ""
            raise UsageError(f"{exc.reason}{where}") from None
    return numbers, messages


def _numbers_in(tokens: list[str], default_region: str | None) -> list[str]:
    """The numbers of `--to`. Each argument is a number when each one parses on its own; otherwise
    (an unquoted `+852 5123 4567` arrives as three arguments) the arguments are joined and split before
    each `+`, so that `--to +852 5123 4567 +65 8123 4567` is two numbers."""

    def valid(text: str) -> bool:
        try:
            parse_number(text, default_region)
        except InvalidNumber:
            return False
        return True

    if all(valid(t) for t in tokens):
        return tokens
    return [part for part in re.split(r"\s+(?=\+)", " ".join(tokens)) if part.strip()]


def _read_list(path: str, settings: SmsSettings) -> RecipientList:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    listing = parse_recipients(text, settings.default_region)
    if listing.refused:
        shown = "; ".join(r.describe(masked=False) for r in listing.refused[:5])
        more = f" (and {len(listing.refused) - 5} more)" if len(listing.refused) > 5 else ""
        raise UsageError(f"{path}: {len(listing.refused)} invalid number(s), nothing sent: {shown}{more}")
    if not listing.recipients:
        raise UsageError(f"{path} holds no phone numbers")
    return listing


async def _query(client: SmsClient, message_id: str, as_json: bool, out: TextIO, err: TextIO) -> int:
    try:
        resp = await client.query(message_id)
    except InvalidRequestError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except SmsError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_FAILED
    status = resp.status.name.lower() if resp.status else "unknown"
    receipt = from_query(resp)
    words = describe(receipt)
    if as_json:
        print(
            json.dumps(
                {
                    "message_id": resp.message_id,
                    "to": resp.to,
                    "status": status,
                    "delivery": str(receipt.delivery) if receipt.delivery else "waiting",
                    "words": words,
                    "error_code": resp.error_code,
                    "error": resp.error_description,
                    "send_date": resp.send_date.isoformat() if resp.send_date else None,
                    "receive_date": resp.receive_date.isoformat() if resp.receive_date else None,
                }
            ),
            file=out,
        )
    else:
        when = resp.receive_date or resp.send_date
        print(
            f"{resp.message_id}  {mask(resp.to or '')}  {words}"
            + (f"  ({when.isoformat()})" if when else ""),
            file=out,
        )
    return EXIT_OK


async def _receipts(args: argparse.Namespace, settings: SmsSettings, out: TextIO, err: TextIO) -> int:
    """Print receipts until `--count` of them (or Ctrl-C): pushed to `--listen`, or from the queue."""
    done = asyncio.Event()
    seen = 0

    def show(items: list[Receipt]) -> None:
        nonlocal seen
        for r in items:
            if args.count is not None and seen >= args.count:
                break
            print(json.dumps(r.as_json()), file=out, flush=True)
            seen += 1
        if args.count is not None and seen >= args.count:
            done.set()

    if args.listen is not None:
        from aiohttp import web

        async def pushed(request: web.Request) -> web.Response:
            try:
                show(parse_push(await request.read()))
            except ReceiptFormatError as exc:
                return web.json_response({"code": 1, "msg": str(exc)}, status=400)
            return web.json_response({"code": 0, "msg": "ok"})

        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", pushed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.listen)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://{args.host}:{port}/ (any path; Ctrl-C to stop)", file=err, flush=True)
        try:
            await done.wait()
        finally:
            await runner.cleanup()
        return EXIT_OK
    if not settings.receipts_queue or not settings.receipts_queue_endpoint:
        print(
            "error: set RECEIPTS_QUEUE and RECEIPTS_QUEUE_ENDPOINT (the receipt queue in the SMS console), "
            "or use --listen PORT for pushed receipts",
            file=err,
        )
        return EXIT_USAGE
    if settings.missing_credentials():
        print(f"error: set {' and '.join(settings.missing_credentials())} (environment or .env)", file=err)
        return EXIT_USAGE
    queue = ReceiptQueue(settings)
    try:
        while not done.is_set():
            try:
                messages = await queue.receive()
            except QueueError as exc:
                print(f"error: {exc}", file=err)
                return EXIT_FAILED
            printed = []
            for m in messages:
                if done.is_set():
                    break  # left in the queue: it comes back after its visibility timeout
                show(m.receipts)
                printed.append(m.handle)
            # printed, then deleted (a stop in between prints them again next time: at least once)
            await queue.delete(printed)
    finally:
        await queue.aclose()
    return EXIT_OK


def _report(outcomes: list[Outcome], as_json: bool, out: TextIO) -> None:
    if as_json:
        for o in outcomes:
            print(json.dumps(o.as_json()), file=out)
        return
    width = max((len("+" + o.to) for o in outcomes), default=12)
    for o in outcomes:
        if o.status == Status.ACCEPTED:
            # a batch answer's ids cannot be matched to numbers by position (see pacing.py): say so
            detail = (
                o.message_id or f"in batch request {o.request_id}" if o.request_id else o.message_id or ""
            )
        else:
            detail = o.error or ""
        print(f"{'+' + o.to:<{width}}  {o.status.value:<8}  {detail}", file=out)
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in Status}
    print(
        f"{counts[Status.ACCEPTED]} accepted, {counts[Status.FAILED]} failed, {counts[Status.UNKNOWN]} unknown",
        file=out,
    )


class _Progress:
    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total = stream, total

    def update(self, done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
