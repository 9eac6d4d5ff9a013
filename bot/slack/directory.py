"""Access-control lookups through the Slack Web API (user groups and channel members)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient


class SlackDirectory:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def group_members(self, group_id: str) -> set[str]:
        resp = await self.client.usergroups_users_list(usergroup=group_id)
        return set(resp.get("users") or [])

    async def channel_members(self, channel_id: str) -> set[str]:
        members: set[str] = set()
        cursor = None
        while True:
            resp = await self.client.conversations_members(channel=channel_id, limit=1000, cursor=cursor)
            members.update(resp.get("members") or [])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return members
