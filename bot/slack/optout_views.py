"""Block Kit for opt-outs: the list, the import form, a refused send's "Send anyway…" and its confirmation."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
)
from slack_sdk.models.blocks.block_elements import FileInputElement
from slack_sdk.models.views import View

from bot.core.optouts import ImportResult, OptOut, Scope

from .ids import ActionId, BlockId, CallbackId
from .views import code, code_masks, counted, escape, preview

SCOPE_OPTIONS = [
    Option(value=Scope.ALL, text="All texts"),
    Option(value=Scope.MARKETING, text="Marketing texts only"),
]


def entry_line(o: OptOut) -> str:
    what = "all texts" if o.scope == Scope.ALL else "marketing only"
    why = f" “{escape(preview(o.reason, 120))}”" if o.reason else ""
    return f"• {code(o.masked)}: {what}, by <@{o.added_by}> on {o.day} ({escape(o.source)}){why}"


def list_blocks(count: int, latest: list[OptOut]) -> list[Block]:
    head = f"*{counted(count, 'number')} opted out.*"
    if latest:
        head += " Most recent:\n" + "\n".join(entry_line(o) for o in latest)
    tail = (
        "Add with `/sms optout add +852 5123 4567 [marketing] [reason]`; look one up with "
        "`/sms optout list <number>`; `/sms optout export` sends you the whole list as CSV."
    )
    return [
        SectionBlock(block_id=BlockId.OPTOUT_LIST, text=MarkdownTextObject(text=head[:2900])),
        ContextBlock(elements=[MarkdownTextObject(text=tail)]),
    ]


def import_modal(metadata: str) -> View:
    return View(
        type="modal",
        callback_id=CallbackId.OPTOUT_IMPORT,
        title=PlainTextObject(text="Import opt-outs"),
        submit=PlainTextObject(text="Import"),
        close=PlainTextObject(text="Cancel"),
        private_metadata=metadata,
        blocks=[
            InputBlock(
                block_id=BlockId.OPTOUT_FILE,
                optional=True,
                label=PlainTextObject(text="CSV file"),
                hint=PlainTextObject(
                    text="First column the number; optional columns “scope” (all or marketing) and “reason” "
                    "override the choices below for their row."
                ),
                element=FileInputElement(
                    action_id=ActionId.OPTOUT_FILE, filetypes=["csv", "txt"], max_files=1
                ),
            ),
            InputBlock(
                block_id=BlockId.OPTOUT_LIST,
                optional=True,
                label=PlainTextObject(text="Or paste numbers"),
                element=PlainTextInputElement(action_id=ActionId.OPTOUT_LIST, multiline=True),
            ),
            InputBlock(
                block_id=BlockId.OPTOUT_SCOPE,
                label=PlainTextObject(text="Opted out of"),
                element=RadioButtonsElement(
                    action_id=ActionId.OPTOUT_SCOPE, options=SCOPE_OPTIONS, initial_option=SCOPE_OPTIONS[0]
                ),
            ),
            InputBlock(
                block_id=BlockId.OPTOUT_REASON,
                optional=True,
                label=PlainTextObject(text="Reason"),
                element=PlainTextInputElement(
                    action_id=ActionId.OPTOUT_REASON,
                    max_length=500,
                    placeholder="e.g. asked by email, ticket 123",
                ),
            ),
        ],
    )


def import_result(result: ImportResult, source: str) -> str:
    lines = [
        f"Opt-out import from {escape(source)}: *{result.added:,} added*, {result.unchanged:,} already on the list."
    ]
    if result.duplicates:
        lines.append(f"{counted(result.duplicates, 'duplicate line')} skipped.")
    if result.refused:
        shown = "; ".join(code_masks(escape(r.describe().rstrip("."))) for r in result.refused[:5])
        more = f" (and {len(result.refused) - 5:,} more)" if len(result.refused) > 5 else ""
        lines.append(f"{counted(len(result.refused), 'line')} refused: {shown}{more}.")
    return "\n".join(lines)


def refused_blocks(text: str, draft_id: str | None) -> list[Block]:
    """A single send refused for an opt-out; with `draft_id`, the "Send anyway…" button (shown only to
    people who may override, and only for an opt-out of all texts on a non-marketing text)."""
    blocks: list[Block] = [
        SectionBlock(block_id=BlockId.OPTOUT_REFUSED, text=MarkdownTextObject(text=code_masks(text)))
    ]
    if draft_id:
        blocks.append(
            ActionsBlock(
                elements=[
                    ButtonElement(
                        action_id=ActionId.OVERRIDE_OPEN,
                        text=PlainTextObject(text="Send anyway…"),
                        value=draft_id,
                    )
                ]
            )
        )
    return blocks


def override_modal(draft_id: str, optout: OptOut, message: str) -> View:
    return View(
        type="modal",
        callback_id=CallbackId.OPTOUT_OVERRIDE,
        title=PlainTextObject(text="Override an opt-out"),
        submit=PlainTextObject(text="Send anyway"),
        close=PlainTextObject(text="Cancel"),
        private_metadata=draft_id,
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"{code_masks(optout.describe(escape))}.\n*Sending overrides that opt-out for this one text: "
                    "your name and your reason are recorded with the send.*"
                )
            ),
            ContextBlock(
                elements=[
                    MarkdownTextObject(text=f"{code(optout.masked)}: “{escape(preview(message, 300))}”")
                ]
            ),
            InputBlock(
                block_id=BlockId.OVERRIDE_REASON,
                label=PlainTextObject(text="Why must this person get it?"),
                element=PlainTextInputElement(
                    action_id=ActionId.OVERRIDE_REASON,
                    min_length=5,
                    max_length=500,
                    placeholder="e.g. security notice about their own account",
                ),
            ),
        ],
    )
