"""Block Kit for outage SMS: the form (new alert or follow-up) and the `/sms groups` listing."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    Block,
    CheckboxesElement,
    ContextBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticMultiSelectElement,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.core.groups import GroupBook

from .ids import ActionId, BlockId, CallbackId
from .views import code_masks, counted, escape, send_at_block

STATUSES = ["Investigating", "Identified", "Monitoring", "Resolved"]


def message_block_id(version: int) -> str:
    """The message box's block_id. Slack keeps what is typed in an input across `views.update` as long as
    its block_id stays the same, so putting another group's template in the box needs a new one."""
    return BlockId.OUTAGE_MESSAGE if version == 0 else f"{BlockId.OUTAGE_MESSAGE}-{version}"


def is_message_block(block_id: str) -> bool:
    return block_id == BlockId.OUTAGE_MESSAGE or block_id.startswith(f"{BlockId.OUTAGE_MESSAGE}-")


def outage_form(
    metadata: str,
    book: GroupBook,
    *,
    message: str,
    message_version: int = 0,
    follow_up_count: int | None = None,
    previous: dict[str, str] | None = None,
) -> View:
    """The form. `message` is what the message box starts with: the chosen group's template, whose
    {service}, {status} and {details} the fields fill in; the user may edit it."""
    previous = previous or {}
    blocks: list[Block] = []
    if follow_up_count is not None:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"*Update to the {follow_up_count:,} people who got the alert* (those whose number failed "
                    "permanently are left out and listed on the next screen)."
                )
            )
        )
    elif book.groups:
        options = [
            Option(
                value=name,
                text=f"{name} ({len(g.members):,})"[:75],
                description=(g.description or None) and g.description[:75],
            )
            for name, g in list(book.groups.items())[:100]
        ]
        blocks.append(
            InputBlock(
                block_id=BlockId.OUTAGE_GROUPS,
                optional=True,
                dispatch_action=True,  # choosing a group puts its template in the message box
                label=PlainTextObject(text="Contact groups"),
                element=StaticMultiSelectElement(
                    action_id=ActionId.OUTAGE_GROUPS, options=options, placeholder="Choose groups"
                ),
            )
        )
    else:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text="No contact groups are configured (setting `CONTACT_GROUPS_FILE`); add numbers below."
                )
            )
        )
    if follow_up_count is None:
        blocks.append(
            InputBlock(
                block_id=BlockId.OUTAGE_EXTRA,
                optional=True,
                label=PlainTextObject(text="Extra numbers"),
                hint=PlainTextObject(text="One per line, with the country code."),
                element=PlainTextInputElement(action_id=ActionId.OUTAGE_EXTRA, multiline=True),
            )
        )
    status_options = [Option(value=s, text=s) for s in STATUSES]
    initial_status = next((o for o in status_options if o.value == previous.get("status")), None)
    blocks += [
        InputBlock(
            block_id=BlockId.OUTAGE_SERVICE,
            optional=True,
            label=PlainTextObject(text="Service"),
            element=PlainTextInputElement(
                action_id=ActionId.OUTAGE_SERVICE,
                placeholder="Payments API",
                initial_value=previous.get("service") or None,
                max_length=80,
            ),
        ),
        InputBlock(
            block_id=BlockId.OUTAGE_STATUS,
            optional=True,
            label=PlainTextObject(text="Status"),
            element=StaticSelectElement(
                action_id=ActionId.OUTAGE_STATUS,
                options=status_options,
                initial_option=initial_status,
                placeholder="Investigating",
            ),
        ),
        InputBlock(
            block_id=BlockId.OUTAGE_DETAILS,
            optional=True,
            label=PlainTextObject(text="Details"),
            element=PlainTextInputElement(action_id=ActionId.OUTAGE_DETAILS, multiline=True, max_length=600),
        ),
        InputBlock(
            block_id=message_block_id(message_version),
            optional=True,
            label=PlainTextObject(text="Message"),
            hint=PlainTextObject(
                text="The group's template: {service}, {status} and {details} come from the fields above, "
                "{name} is each person's name. Edit it freely; the confirmation shows the result."
            ),
            element=PlainTextInputElement(
                action_id=ActionId.OUTAGE_MESSAGE, multiline=True, initial_value=message or None
            ),
        ),
        send_at_block(BlockId.OUTAGE_SEND_AT, ActionId.OUTAGE_SEND_AT),
        InputBlock(
            block_id=BlockId.OUTAGE_TEST,
            optional=True,
            label=PlainTextObject(text="Test"),
            element=CheckboxesElement(
                action_id=ActionId.OUTAGE_TEST,
                options=[Option(value="test", text="Send a test to me first (only my number)")],
            ),
        ),
    ]
    return View(
        type="modal",
        callback_id=CallbackId.OUTAGE_FORM,
        title=PlainTextObject(text="Outage update" if follow_up_count is not None else "Outage SMS"),
        submit=PlainTextObject(text="Review"),
        close=PlainTextObject(text="Cancel"),
        private_metadata=metadata,
        blocks=blocks,
    )


def groups_blocks(book: GroupBook) -> list[Block]:
    lines = [f"*Contact groups* ({book.loaded_from or 'not loaded'})"]
    for name, g in book.groups.items():
        lines.append(
            f"• `{escape(name)}`: {counted(len(g.members), 'member')}{' — ' + escape(g.description) if g.description else ''}"
        )
    if not book.groups:
        lines.append("No usable groups.")
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text="\n".join(lines)[:2900]))]
    notes = ([f"⚠️ {escape(book.error)}"] if book.error else []) + [
        f"• {code_masks(escape(p))}" for p in book.problems[:20]
    ]
    if notes:
        more = f"\n…and {len(book.problems) - 20} more" if len(book.problems) > 20 else ""
        blocks.append(
            ContextBlock(
                elements=[MarkdownTextObject(text=("*Problems*\n" + "\n".join(notes) + more)[:2900])]
            )
        )
    return blocks
